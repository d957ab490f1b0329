"""Training and evaluation: config, losses, schedules, the loop, checkpoints and plots.

Loaded on first use (``pixelwise.lazy``): ``pixelwise.train.distributed`` alone does not load the trainer.
"""

from __future__ import annotations

from pixelwise.lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "Config": "pixelwise.train.config",
    "ConfigError": "pixelwise.train.config",
    "config_from_dict": "pixelwise.train.config",
    "config_to_dict": "pixelwise.train.config",
    "load_config": "pixelwise.train.config",
    "evaluate": "pixelwise.train.evaluate",
    "format_table": "pixelwise.train.evaluate",
    "TrainResult": "pixelwise.train.trainer",
    "train": "pixelwise.train.trainer",
})
