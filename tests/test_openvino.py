"""The OpenVINO backend and export: parity with PyTorch in fp32, argmax agreement with OpenVINO's own
precision choice, what it reports, atomic IR files, and a clear error when the extra is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelwise import Segmenter, create_model, save_model
from pixelwise.cli import main
from pixelwise.explain.base import synthetic_batch, train_briefly
from pixelwise.infer.inputs import normalize_batch

ov = pytest.importorskip("openvino", reason='OpenVINO is not installed (pip install "pixelwise[openvino]")')

MODELS = {
    "unet": {"base_channels": 8, "depth": 3},
    "deeplabv3plus": {"backbone": "mobilenet_v2"},
    "lraspp": {},
    "fcn8s": {},
}


def cpu_has_bf16_units() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def logits_of(segmenter: Segmenter, pixels: np.ndarray) -> torch.Tensor:
    batch = normalize_batch([pixels], segmenter.mean, segmenter.std)
    with torch.inference_mode():
        return segmenter.logits(batch)


@pytest.mark.parametrize("name", list(MODELS))
def test_fp32_logits_match_pytorch(name):
    torch.manual_seed(0)
    model = create_model(name, 3, **MODELS[name]).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    expected = logits_of(Segmenter(model), pixels)
    openvino = Segmenter(model, backend="openvino", precision="fp32")
    assert openvino.precision == "fp32"
    actual = logits_of(openvino, pixels)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= 1e-3
    assert (actual.argmax(1) == expected.argmax(1)).float().mean().item() >= 0.9999


def test_default_precision_is_openvinos_choice_and_agrees():
    """Trained weights (random ones make near ties that any rounding flips): >= 99.9% of labels agree."""
    model = train_briefly(create_model("unet", 5, base_channels=8, depth=3), steps=150, image_size=48)
    openvino = Segmenter(model, backend="openvino")
    assert openvino.precision == ("bf16" if cpu_has_bf16_units() else "fp32")
    assert "OpenVINO's choice" in repr(openvino) and f"precision='{openvino.precision}'" in repr(openvino)
    images, _ = synthetic_batch("val", 4, image_size=64)
    pixels = [image.mul(255).round().byte().permute(1, 2, 0).numpy() for image in images]
    expected, actual = Segmenter(model).predict(pixels), openvino.predict(pixels)
    agreement = np.mean([np.mean(a == e) for a, e in zip(actual, expected, strict=True)])
    assert agreement >= 0.999


def test_bad_precision_and_device_are_refused():
    model = create_model("unet", 2, base_channels=4, depth=1)
    with pytest.raises(ValueError, match="openvino backend runs on the CPU, in fp32 or bf16"):
        Segmenter(model, backend="openvino", precision="fp16")


def test_export_writes_ir_that_runs_at_other_sizes(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("deeplabv3plus", 4, backbone="mobilenet_v2").eval()
    save_model(model, tmp_path / "run")
    out = tmp_path / "ir" / "model.xml"
    out.parent.mkdir()
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "openvino", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.bin", "model.xml"]  # no temporary left
    read = ov.Core().read_model(out)
    assert read.get_rt_info(["pixelwise", "class_names"]).astype(str) == '["class 0", "class 1", "class 2", "class 3"]'
    compiled = ov.Core().compile_model(read, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = torch.randn(2, 3, 53, 70)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(compiled(x.numpy())[0], expected, atol=1e-3)


def test_export_needs_an_xml_name(tmp_path, capsys):
    save_model(create_model("unet", 2, base_channels=4, depth=1), tmp_path / "run")
    code = main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "openvino",
                 "--out", str(tmp_path / "model.onnx")])
    assert code == 2
    assert "OpenVINO's IR is an .xml file" in capsys.readouterr().err


def test_missing_extra_is_named(tmp_path, capsys, monkeypatch):
    save_model(create_model("unet", 2, base_channels=4, depth=1), tmp_path / "run")
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "pixelwise\[openvino\]"'):
        Segmenter(tmp_path / "run", backend="openvino")
    code = main(["predict", "--checkpoint", str(tmp_path / "run"), str(tmp_path / "x.png"), "--out",
                 str(tmp_path / "out"), "--backend", "openvino"])
    assert code == 2
    assert 'pip install "pixelwise[openvino]"' in capsys.readouterr().err


def test_server_reports_backend_and_precision(tmp_path):
    from fastapi.testclient import TestClient

    from pixelwise.serve import create_app

    segmenter = Segmenter(create_model("unet", 2, base_channels=4, depth=1), backend="openvino", precision="fp32")
    card = TestClient(create_app(segmenter)).get("/v1/model").json()["card"]
    assert (card["backend"], card["precision"]) == ("openvino", "fp32")


def test_inputs_smaller_than_a_pooling_window_run_right_after_larger_ones():
    """OpenVINO's MaxPool refuses windows larger than the map (and one thread then returned the last output)."""
    torch.manual_seed(0)
    model = create_model("unet", 4, base_channels=4, depth=3).eval()
    torch_backend, openvino = Segmenter(model), Segmenter(model, backend="openvino", precision="fp32")
    rng = np.random.default_rng(0)
    for height, width in ((40, 40), (3, 5), (2, 130), (40, 40), (1, 1)):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        expected, actual = logits_of(torch_backend, pixels), logits_of(openvino, pixels)
        assert actual.shape == expected.shape == (1, 4, height, width)
        assert (actual - expected).abs().max().item() <= 1e-3


def test_export_makes_missing_folders_and_refuses_a_folder_in_the_bins_place(tmp_path, capsys):
    save_model(create_model("unet", 2, base_channels=4, depth=1), tmp_path / "run")
    out = tmp_path / "new" / "deeper" / "model.xml"
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "openvino", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.bin", "model.xml"]
    (tmp_path / "other.bin").mkdir()
    code = main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "openvino",
                 "--out", str(tmp_path / "other.xml")])
    assert code == 2
    assert "other.bin is a folder" in capsys.readouterr().err
