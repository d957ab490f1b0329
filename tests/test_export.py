"""Export: ONNX and TorchScript with dynamic sizes; the onnxruntime backend agrees with PyTorch.

Every registered model is exported with small options (3 classes, the lightest backbone) and compared
with eager PyTorch on random images, and on a real CamVid image when the data set is present.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelwise import create_model, list_models, save_model
from pixelwise.cli import main
from pixelwise.infer import ExportError, Segmenter, export_onnx, export_torchscript
from pixelwise.infer.export import onnx_session

SMALL_OPTIONS = {
    "unet": {"base_channels": 8},
    "deeplabv2": {"backbone": "resnet50"},
    "deeplabv3": {"backbone": "mobilenet_v2"},
    "deeplabv3plus": {"backbone": "mobilenet_v2"},
    "fcn": {"backbone": "resnet50"},
}
# Models that cannot be exported with dynamic sizes, and why (docs/inference.md lists them too).
CANNOT_EXPORT = {
    "hypercolumn": "its forward computes the interpolation grid and reshape sizes in Python (math.ceil of the "
                   "input size) and the batch into a view: tracing freezes them, so other sizes fail",
}


def data_root() -> Path:
    return Path(os.environ.get("PIXELWISE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def assert_backends_agree(torch_segmenter: Segmenter, onnx_segmenter: Segmenter, pixels: np.ndarray) -> None:
    """Max |logit difference| <= 1e-3 and argmax agreement >= 99.99% on one uint8 image."""
    from pixelwise.infer.inputs import normalize_batch, to_channels

    batch = normalize_batch([to_channels(pixels, 3)], torch_segmenter.mean, torch_segmenter.std)
    with torch.inference_mode():
        expected, actual = torch_segmenter.logits(batch), onnx_segmenter.logits(batch)
    assert (actual - expected).abs().max().item() <= 1e-3
    assert (actual.argmax(1) == expected.argmax(1)).float().mean().item() >= 0.9999


@pytest.mark.parametrize("name", list_models())
def test_onnxruntime_backend_agrees_with_torch(name):
    torch.manual_seed(0)
    model = create_model(name, 3, **SMALL_OPTIONS.get(name, {})).eval()
    if name in CANNOT_EXPORT:
        # TorchScript traces the same way and fails the same check, ten times faster than ONNX.
        with pytest.raises(ExportError, match="fails at size|differs|gives shape"):
            export_torchscript(model)
        return
    onnx_backend = Segmenter(model, backend="onnxruntime")  # exports, then checks a second size itself
    torch_backend = Segmenter(model)
    rng = np.random.default_rng(0)
    assert_backends_agree(torch_backend, onnx_backend, rng.integers(0, 256, (41, 57, 3), dtype=np.uint8))


def test_valid_unet_exports_and_overlap_tiles_through_onnxruntime():
    torch.manual_seed(0)
    model = create_model("unet", 3, base_channels=4, depth=2, padding="valid").eval()
    pixels = np.random.default_rng(1).integers(0, 256, (45, 38, 3), dtype=np.uint8)
    expected = Segmenter(model, mode="slide", tile=(8, 8)).predict_proba(pixels)
    actual = Segmenter(model, mode="slide", tile=(8, 8), backend="onnxruntime").predict_proba(pixels)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_agreement_on_a_real_camvid_image():
    folder = data_root() / "camvid" / "val"
    if not folder.is_dir():
        pytest.skip(f"CamVid not found at {folder} (set PIXELWISE_DATA): real-image parity not checked")
    from PIL import Image

    pixels = np.asarray(Image.open(sorted(folder.glob("*.png"))[0]).convert("RGB"))
    torch.manual_seed(0)
    model = create_model("deeplabv3plus", 11, backbone="mobilenet_v2").eval()
    assert_backends_agree(Segmenter(model), Segmenter(model, backend="onnxruntime"), pixels)


def test_cli_exports_files_that_run_at_other_sizes(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("unet", 3, base_channels=4, depth=2)
    save_model(model, tmp_path / "run")
    x = torch.randn(2, 3, 29, 35)
    with torch.no_grad():
        expected = model.eval()(x)

    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "onnx", "--out",
                 str(tmp_path / "model.onnx")]) == 0
    session = onnx_session(tmp_path / "model.onnx")
    actual = session.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(actual, expected.numpy(), atol=1e-4)

    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "torchscript", "--out",
                 str(tmp_path / "model.pt")]) == 0
    scripted = torch.jit.load(tmp_path / "model.pt")
    torch.testing.assert_close(scripted(x), expected, atol=1e-4, rtol=1e-4)
    assert "wrote" in capsys.readouterr().out
    # Nothing but the two outputs: the atomic writes leave no temporary files behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.pt", "run"]


def test_cli_reports_a_model_that_cannot_export(tmp_path, capsys):
    save_model(create_model("hypercolumn", 3), tmp_path / "run")
    code = main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "torchscript", "--out",
                 str(tmp_path / "model.pt")])
    assert code == 1
    assert "hypercolumn" in capsys.readouterr().err
    assert not (tmp_path / "model.pt").exists()


def test_export_onnx_returns_the_program_bytes():
    model = create_model("unet", 2, base_channels=4, depth=1)
    session = onnx_session(export_onnx(model))
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("image", ["batch", 3, "height", "width"])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("logits", ["batch", 2, "height", "width"])]
