"""PEFT methods: LoRA adapters on a (possibly 4-bit NF4) base, or full fine-tuning.

`lora` and `qlora` share the adapter; `qlora` differs only in how `modeling.build_model` loads the base
(bitsandbytes NF4, double quantisation, bf16 compute, bf16 quant storage on GPU) and prepares it with
`peft.prepare_model_for_kbit_training`. Targets default to every linear layer except the output head (peft's
"all-linear", which also matches bitsandbytes' Linear4bit), as MFTCoder does (docs/reference.md §5).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mft_trainer.config.model import PeftSettings
from mft_trainer.model.quiet import import_peft


def lora_config(peft_cfg: PeftSettings) -> Any:
    """The peft LoraConfig for the `peft:` section."""
    peft = import_peft(quantized=peft_cfg.method == "qlora")

    return peft.LoraConfig(
        r=peft_cfg.r,
        lora_alpha=peft_cfg.alpha,
        lora_dropout=peft_cfg.dropout,
        target_modules=peft_cfg.target_modules,
        target_parameters=list(peft_cfg.target_parameters) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(model: nn.Module, peft_cfg: PeftSettings) -> nn.Module:
    """Wrap `model` in a PeftModel with fresh LoRA adapters; only the adapters train."""
    peft = import_peft(quantized=peft_cfg.method == "qlora")
    if peft_cfg.method not in ("lora", "qlora"):
        raise ValueError(f"peft.method: apply_lora called for {peft_cfg.method!r}")
    try:
        return peft.get_peft_model(model, lora_config(peft_cfg))
    except ValueError as exc:
        raise ValueError(f"peft.target_modules / peft.target_parameters: {exc}") from exc


def trainable_parameter_count(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, for the run summary."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
