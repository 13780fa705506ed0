"""The one mft-train config tree: `TrainConfig` and its sections, validated before any model or data is loaded.

    cfg = TrainConfig.from_yaml("run.yaml", ["optimizer.lr=1e-4"])
"""

from mft_trainer.config.base import ConfigError, Section
from mft_trainer.config.data import DataConfig
from mft_trainer.config.loss import LossConfig
from mft_trainer.config.model import ModelConfig, ModelInit, PeftSettings
from mft_trainer.config.template import TemplateConfig
from mft_trainer.config.train import (
    DistributedConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "ConfigError", "DataConfig", "DistributedConfig", "LoggingConfig", "LossConfig", "ModelConfig", "ModelInit",
    "OptimizerConfig", "PeftSettings", "ScheduleConfig", "Section", "TemplateConfig", "TrainConfig",
]
