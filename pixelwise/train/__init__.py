"""Training and evaluation: config, losses, schedules, the loop, checkpoints and plots."""

from pixelwise.train.config import Config, ConfigError, config_from_dict, config_to_dict, load_config
from pixelwise.train.evaluate import evaluate, format_table
from pixelwise.train.trainer import TrainResult, train

__all__ = [
    "Config",
    "ConfigError",
    "TrainResult",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "format_table",
    "load_config",
    "train",
]
