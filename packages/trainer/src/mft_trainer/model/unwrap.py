"""Reach the transformers model inside DDP / DeepSpeed / FSDP1 wrappers and a PeftModel."""

from __future__ import annotations

import sys

from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP / DeepSpeed / FSDP1 wrappers (anything holding the real model in `.module`); keeps a PeftModel."""
    seen = 0
    while type(model).__name__ in ("DistributedDataParallel", "DataParallel", "DeepSpeedEngine",
                                   "FullyShardedDataParallel", "PipelineEngine") and seen < 8:
        model = model.module
        seen += 1
    return model


def hf_model(model: nn.Module) -> nn.Module:
    """The transformers PreTrainedModel inside any wrapper or PeftModel (LoRA layers stay injected)."""
    model = unwrap_model(model)
    # Not imported here: importing peft also imports bitsandbytes (~1.6 s measured, see benchmarks/
    # train_step_speed.py); when peft was never imported the model cannot be a PeftModel.
    peft = sys.modules.get("peft")
    if peft is not None and isinstance(model, peft.PeftModel):
        model = model.get_base_model()
    return model
