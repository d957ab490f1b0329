"""save_model / load_model: safetensors + config.json (the run card), identical outputs, clear errors, and
every run directory written by an earlier version still loads."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pixelwise
from pixelwise.card import CardError, DataSource, RunCard
from pixelwise.cli import main
from pixelwise.crf import CRFSettings
from pixelwise.data.transforms import Normalization

V1_RUN = Path(__file__).parent / "data" / "v1_run"


@pytest.mark.parametrize(
    ("name", "options"),
    [("unet", {"base_channels": 8, "depth": 3, "batch_norm": True}), ("fcn8s", {"upsampling": "bilinear"})],
)
def test_round_trip_gives_identical_outputs(tmp_path, name, options):
    torch.manual_seed(0)
    model = pixelwise.create_model(name, 4, **options)
    # Move BatchNorm statistics away from their defaults so that buffers are checked too.
    model.train()
    model(torch.randn(2, 3, 40, 40))
    model.eval()
    fields = {"class_names": ["a", "b", "c", "d"], "palette": [[0, 0, 0]] * 4,
              "normalization": Normalization((0.5,) * 3, (0.25,) * 3), "data": DataSource("camvid", "/data"),
              "precision": "bf16", "crf": CRFSettings(iterations=3), "step": 7, "scores": {"miou": 0.5},
              "metadata": {"note": "mine"}}
    pixelwise.save_model(model, tmp_path, **fields)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = pixelwise.load_model(tmp_path)
    x = torch.randn(1, 3, 37, 29)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert loaded.card == model.card.replace(**fields)
    assert loaded.card.name == name and {key: loaded.card.options[key] for key in options} == options
    assert not loaded.training


def test_a_version_1_run_directory_still_loads(tmp_path):
    """tests/data/v1_run was written by the trainer before the run card (format version 1); its model gives
    the logits it gave then, and every field the old metadata held lands in its place on the card."""
    run = shutil.copytree(V1_RUN, tmp_path / "run")
    model = pixelwise.load_model(run)
    expected = load_file(run / "expected_logits.safetensors")
    with torch.inference_mode():
        torch.testing.assert_close(model(expected["input"]), expected["logits"], rtol=1e-5, atol=1e-6)
    card = model.card
    assert card.class_names == ["background", "disc", "rectangle", "triangle", "ring"]
    assert card.normalization == Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert card.data == DataSource("synthetic", None, {"num_images": 4, "image_size": 24}, {"num_images": 2}, "val")
    assert card.crf == CRFSettings(iterations=3, bilateral_srgb=5.0)
    assert (card.step, card.precision, card.ignore_index, card.metadata) == (2, "fp32", 255, {})
    assert set(card.scores) >= {"miou", "pixel_accuracy"}
    assert card.train_config["name"] == "v1-fixture"
    # Saved again it is written as version 2 and reads back to the same card.
    pixelwise.save_model(model, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["version"] == 2
    assert pixelwise.read_card(tmp_path / "again") == card
    # And it evaluates on the data set its card names, as before.
    assert main(["eval", "--checkpoint", str(run)]) == 0


def test_version_1_user_metadata_and_the_old_xception_default():
    """Version 1 as save_model(metadata=...) wrote it: normalisation under "normalization", user keys kept;
    a DeepLabv3+ Xception-65 of version 1 keeps the regular ASPP it was built with."""
    raw = {"format": "pixelwise-model", "version": 1, "name": "deeplabv3plus", "num_classes": 21,
           "options": {"output_stride": 8}, "class_names": None, "palette": None,
           "metadata": {"normalization": {"mean": [0.5], "std": [0.2]}, "owner": "lab"}}
    card = RunCard.from_dict(raw)
    assert card.normalization == Normalization((0.5,), (0.2,)) and card.metadata == {"owner": "lab"}
    assert card.options == {"output_stride": 8, "separable_aspp": False}
    with torch.device("meta"):
        model = pixelwise.create_model(card.name, card.num_classes, **card.options)
    assert model.aspp.branches[1][0].groups == 1  # a regular 3x3 atrous convolution
    with pytest.raises(CardError, match=r"config: format version 3 is newer"):
        RunCard.from_dict({**raw, "version": 3})
    with pytest.raises(CardError, match=r"the run's crf section: unknown key\(s\) \['bilateral_std'\]"):
        RunCard.from_dict({**raw, "metadata": {"train_config": {"crf": {"bilateral_std": 3}}}})


def test_card_fields_cannot_hide_in_metadata(tmp_path):
    model = pixelwise.create_model("unet", 2, base_channels=4, depth=1)
    with pytest.raises(CardError, match=r"metadata keys \['mean'\] are card fields"):
        pixelwise.save_model(model, tmp_path, metadata={"mean": [0.5] * 3})
    with pytest.raises(ValueError, match="come from the model"):
        pixelwise.save_model(model, tmp_path, num_classes=3)
    assert not tmp_path.joinpath("config.json").exists()


def test_no_pickle_in_the_weights(tmp_path):
    pixelwise.save_model(pixelwise.create_model("unet", 2, base_channels=4, depth=1), tmp_path)
    header = (tmp_path / "model.safetensors").read_bytes()[:8]
    assert int.from_bytes(header, "little") > 0  # safetensors starts with its JSON header length
    assert b"\x80\x04" not in (tmp_path / "model.safetensors").read_bytes()[:16]  # not a pickle stream


@pytest.fixture()
def saved(tmp_path):
    pixelwise.save_model(pixelwise.create_model("unet", 3, base_channels=4, depth=2), tmp_path)
    return tmp_path


def test_missing_files_are_named(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors: missing"):
        pixelwise.load_model(saved)
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        pixelwise.load_model(saved)


def test_corrupt_weights_are_named(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors: cannot be read as safetensors"):
        pixelwise.load_model(saved)


def test_corrupt_config_is_named(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        pixelwise.load_model(saved)
    (saved / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="config.json: not a pixelwise model config"):
        pixelwise.load_model(saved)


def test_mismatched_shapes_are_named(saved):
    config = json.loads((saved / "config.json").read_text())
    config["num_classes"] = 5
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"does not match 'unet'.*shape mismatch.*head\.weight"):
        pixelwise.load_model(saved)


def test_unknown_model_in_config_is_named(saved):
    config = json.loads((saved / "config.json").read_text())
    config["name"] = "segformer"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json: unknown model 'segformer'"):
        pixelwise.load_model(saved)


def test_save_needs_a_registered_model_and_consistent_names(tmp_path):
    with pytest.raises(ValueError, match="create_model"):
        pixelwise.save_model(torch.nn.Conv2d(3, 2, 1), tmp_path)
    with pytest.raises(ValueError, match="class_names has 2 entries for a model with 3 classes"):
        pixelwise.save_model(pixelwise.create_model("unet", 3, base_channels=4, depth=1), tmp_path,
                             class_names=["a", "b"])
