"""Config loading: defaults, validation with suggestions, --set overrides, and the shipped recipes."""

from pathlib import Path

import pytest
import yaml

from pixelwise.crf import DEEPLAB_VOC
from pixelwise.data import DATASETS
from pixelwise.models import model_options
from pixelwise.train.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from pixelwise.train.recipes import QUICKSTART

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_defaults_and_name_from_file(tmp_path):
    config = load_config(write(tmp_path, "train: {steps: 7}\n"))
    assert config.name == "recipe"
    assert config.train.steps == 7
    assert config.optim.schedule == "poly" and config.optim.power == 0.9
    assert config.model == Config().model


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"recipe.yaml: unknown key 'train.setps'; did you mean 'train.steps'"):
        load_config(write(tmp_path, "train: {setps: 7}\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'optimiser'; did you mean 'optim'"):
        load_config(write(tmp_path, "optimiser: {lr: 0.1}\n"))


@pytest.mark.parametrize("text, message", [
    ("train: {steps: ten}\n", "train.steps = 'ten' is not a valid int"),
    ("train: {steps: 0}\n", "train.steps must be >= 1"),
    ("optim: {schedule: linear}\n", "optim.schedule = 'linear' is not one of"),
    ("loss: {class_weights: median}\n", "loss.class_weights = 'median'"),
    ("data: {crop_size: [a, b]}\n", "data.crop_size"),
    ("model: 3\n", "model must be a mapping"),
    ("train: {ema_decay: 1.5}\n", "train.ema_decay must be in"),
    ("train: {ema_warmup: 0.5}\n", "train.ema_warmup must be > 1"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(write(tmp_path, text))


def test_set_overrides_nested_keys_with_yaml_values(tmp_path):
    path = write(tmp_path, "model: {name: unet, options: {depth: 2}}\n")
    config = load_config(path, ["train.steps=12", "model.options.base_channels=4", "data.crop_size=[8, 16]",
                                "optim.lr=1e-3", "loss.class_weights=null", "data.root=/x"])
    assert config.train.steps == 12
    assert config.model.options == {"depth": 2, "base_channels": 4}
    assert config.data.crop_size == [8, 16]
    assert config.optim.lr == 0.001
    assert config.data.root == "/x"
    with pytest.raises(ConfigError, match="did you mean 'train.steps'"):
        load_config(path, ["train.step=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["train.steps"])


def test_round_trip_through_dict_and_yaml():
    config = config_from_dict({"train": {"steps": 5, "precision": "bf16"}, "loss": {"class_weights": [1, 2]}})
    assert config.loss.class_weights == [1.0, 2.0]
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(config))))
    assert again == config


def test_quickstart_yaml_mirrors_the_packaged_recipe():
    shipped = yaml.safe_load((CONFIGS / "quickstart.yaml").read_text())
    shipped.pop("result", None)  # the recorded result documents the file only
    assert config_from_dict(shipped) == config_from_dict(QUICKSTART)


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_recipe_is_valid_and_records_its_result(path):
    config = load_config(path)
    assert config.result, f"{path} must record its result (or 'not yet run') and the command"
    # The model options must be ones the model takes (checked without building or downloading anything).
    assert set(config.model.options) <= set(model_options(config.model.name)), config.model.options
    assert config.data.name in DATASETS


@pytest.mark.parametrize("recipe", ["voc/deeplabv1_vgg16.yaml", "voc/deeplabv2_resnet101.yaml"])
def test_deeplab_v1_v2_recipes_carry_deeplab_v2s_published_crf(recipe):
    config = load_config(CONFIGS / recipe)
    assert config.model.name == recipe.split("/")[1].split("_")[0]
    published = {"iterations": 10, "bilateral_compat": 4.0, "bilateral_sxy": 49.0, "bilateral_srgb": 5.0,
                 "gaussian_compat": 3.0, "gaussian_sxy": 3.0}
    assert config.crf.as_keywords() == published == DEEPLAB_VOC.as_keywords()


def test_crf_settings_default_to_pydensecrfs_and_reject_unknown_keys():
    import inspect

    from pixelwise.crf import CRFasRNN, dense_crf

    pydensecrf = {"iterations": 5, "gaussian_sxy": 3.0, "gaussian_compat": 3.0, "bilateral_sxy": 80.0,
                  "bilateral_srgb": 13.0, "bilateral_compat": 10.0}
    assert Config().crf.as_keywords() == pydensecrf
    signature = inspect.signature(dense_crf).parameters
    assert {name: signature[name].default for name in pydensecrf} == pydensecrf
    layer = CRFasRNN(3)
    assert (layer.iterations, layer.gaussian_sxy, layer.bilateral_sxy, layer.bilateral_srgb) == (5, 3.0, 80.0, 13.0)
    assert layer.kernel_weights[:, 0].tolist() == [3.0, 10.0]
    with pytest.raises(ConfigError, match="unknown key 'crf.bilateral_std'; did you mean 'crf.bilateral_sxy'"):
        config_from_dict({"crf": {"bilateral_std": 3}})
