"""save_model / load_model: safetensors + config.json, identical outputs, clear errors."""

import json

import pytest
import torch

import pixelwise


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
    pixelwise.save_model(model, tmp_path, class_names=["a", "b", "c", "d"], palette=[[0, 0, 0]] * 4,
                         metadata={"mean": [0.5] * 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = pixelwise.load_model(tmp_path)
    x = torch.randn(1, 3, 37, 29)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    config = loaded.pixelwise_config
    assert config["name"] == name and config["options"] == options
    assert config["class_names"] == ["a", "b", "c", "d"] and config["metadata"] == {"mean": [0.5] * 3}
    assert not loaded.training


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
