"""Build or load the causal LM to train: dtype and attention resolution, the tokenizer, init from a config, NF4.

    build_model(model_cfg, peft_cfg, vocab_size=V, device="cpu")   -> nn.Module (HF model or PeftModel), train mode

Precision: trainable weights are fp32 and the forward runs under bf16 autocast where the device has bf16
(`forward.token_losses` applies it); on CUDA the frozen base of lora/qlora is stored in the compute dtype.

Packed attention (`attention_choice`): sdpa models are switched to segment-wise attention (`attention.py`);
torch_varlen models to `native_attention.TORCH_VARLEN`; flex_attention is transformers' own. The choice and its
reason are kept on the model as `mft_attention` (mft-train logs and records it). A model type outside the verified
list is probed for packed-segment isolation once, here.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mft_trainer.config.model import ModelConfig, ModelInit, PeftSettings, flash_attn_available
from mft_trainer.model.attention import PACKING_VERIFIED_MODEL_TYPES, set_packed_attention
from mft_trainer.model.forward import verify_packing_isolation
from mft_trainer.model.moe import expert_counts
from mft_trainer.model.native_attention import (
    TORCH_VARLEN,
    flex_available,
    register_torch_varlen,
    varlen_available,
)
from mft_trainer.model.quiet import quiet_load, quiet_save

_INIT_BASES: set[str] = set()  # temp dirs holding init-built base weights (copied into adapter checkpoints)


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 autocast is a speed-up."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_supported(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """The compute dtype: `auto` -> bf16 where the device supports it, else fp32."""
    if dtype == "fp32":
        return torch.float32
    if dtype == "bf16":
        return torch.bfloat16
    if dtype == "auto":
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    raise ValueError(f"model.dtype: {dtype!r}; expected auto, bf16 or fp32")


ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2", "flex_attention", "torch_varlen")


def attention_choice(requested: str, device: torch.device | str,
                     compute_dtype: torch.dtype = torch.bfloat16) -> tuple[str, str]:
    """The packed-attention path for `model.attn_implementation` on `device`, and why (for logs and errors).

    `auto`, in order: flash_attention_2 when the flash-attn package is installed and the device is CUDA; else
    torch_varlen (torch's own flash kernels over `cu_seqlens`) on a CUDA GPU of compute capability >= 8.0 with a
    bf16/fp16 compute dtype; else sdpa (segment-wise or the 4-D mask per micro-batch, `attention.py`). Never
    flex_attention: it has no backward on the CPU in torch 2.13, and on CUDA varlen runs the same flash kernels
    without a compile (benchmarks/gpu_check.py measures both there). So `auto` never needs flash-attn on CUDA.

    Args:
        requested: one of `ATTN_IMPLEMENTATIONS`.
        device: the training device.
        compute_dtype: what `resolve_dtype` gave (the flash kernels take bf16/fp16 only).

    Returns:
        `(implementation, reason)`: one of sdpa, eager, flash_attention_2, flex_attention, torch_varlen.

    Raises:
        ValueError: naming `model.attn_implementation` when the requested path cannot run here.
    """
    device = torch.device(device)
    half = compute_dtype in (torch.bfloat16, torch.float16)
    if requested == "auto":
        ok, why = flash_attn_available()
        if ok and device.type == "cuda":
            return "flash_attention_2", "auto: flash-attn is installed and the device is CUDA"
        varlen_ok, varlen_why = varlen_available(device)
        if varlen_ok and half:
            return "torch_varlen", f"auto: CUDA without flash-attn ({why}); torch's varlen_attn needs no package"
        if device.type == "cuda":
            reason = varlen_why or f"the compute dtype is {compute_dtype} (varlen_attn takes bf16/fp16)"
            return "sdpa", f"auto: torch_varlen cannot run ({reason}); segment-wise sdpa or the 4-D mask"
        return "sdpa", f"auto: {device.type} device; segment-wise sdpa or the 4-D mask per micro-batch"
    if requested == "flash_attention_2":
        ok, why = flash_attn_available()
        if not ok or device.type != "cuda":
            raise ValueError(f"model.attn_implementation: flash_attention_2 cannot run on {device}: "
                             f"{why or 'it needs a CUDA device'}")
    elif requested == "torch_varlen":
        ok, why = varlen_available(device)
        if not ok:
            raise ValueError(f"model.attn_implementation: torch_varlen cannot run on {device}: {why}; "
                             "use auto, sdpa or flash_attention_2")
        if not half:
            raise ValueError(f"model.attn_implementation: torch_varlen runs flash kernels in bf16/fp16 only, and "
                             f"model.dtype resolved to {compute_dtype}; use model.dtype bf16 or auto")
    elif requested == "flex_attention":
        ok, why = flex_available()
        if not ok:
            raise ValueError(f"model.attn_implementation: flex_attention cannot be used: {why}")
    elif requested not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"model.attn_implementation: {requested!r}; expected one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    return requested, "requested"


def resolve_attn_implementation(requested: str, device: torch.device | str,
                                compute_dtype: torch.dtype = torch.bfloat16) -> str:
    """The implementation of `attention_choice` (without the reason)."""
    return attention_choice(requested, device, compute_dtype)[0]


def _unsupported_attention(attn: str, *, init: str | None, exc: Exception) -> ValueError:
    """transformers' refusal of an attention implementation for a model class, with our key named."""
    what = f"model type {init!r}" if init else "this model"
    return ValueError(f"model.attn_implementation: {attn} is not supported by {what} in transformers "
                      f"({str(exc).splitlines()[0][:200]}); use auto or sdpa")


# ------------------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(model_cfg: ModelConfig) -> Any:
    """The tokenizer at `model.tokenizer` (or `model.path`), with a pad token (the EOS when it has none)."""
    from transformers import AutoTokenizer

    path = model_cfg.tokenizer_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError) as exc:
        key = "model.tokenizer" if model_cfg.tokenizer else "model.path"
        raise ValueError(f"{key}: cannot load a tokenizer from {path!r}: {exc}") from exc
    if tokenizer.eos_token is None:
        raise ValueError(f"{path}: the tokenizer has no eos_token; the template needs one to end assistant turns")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ------------------------------------------------------------------------------------------------- building
def build_init_config(init: ModelInit, vocab_size: int) -> Any:
    """The transformers config for `model.init` with the tokenizer's vocabulary size."""
    from transformers import AutoConfig

    kwargs = init.config_kwargs()
    kwargs.setdefault("bos_token_id", None)
    kwargs.setdefault("eos_token_id", None)
    kwargs.setdefault("pad_token_id", None)
    return AutoConfig.for_model(init.model_type, vocab_size=vocab_size, **kwargs)


def _materialise_init_base(model: nn.Module) -> str:
    """Save a freshly initialised base to a process-lifetime temp dir, so PEFT can name and reload it."""
    path = tempfile.mkdtemp(prefix="mft-init-base-")
    atexit.register(shutil.rmtree, path, True)
    with quiet_save():
        model.save_pretrained(path)
    _INIT_BASES.add(os.path.realpath(path))
    return path


def _quantization_config(compute_dtype: torch.dtype, device: torch.device) -> Any:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        # bf16 storage lets FSDP/ZeRO-3 shard the packed 4-bit weights like any bf16 tensor (docs/reference.md §5).
        bnb_4bit_quant_storage=compute_dtype if device.type == "cuda" else torch.uint8,
    )


def build_model(
    model_cfg: ModelConfig, peft_cfg: PeftSettings, *, vocab_size: int, device: torch.device | str = "cpu"
) -> nn.Module:
    """The model to train, on `device`, in train mode: a PeftModel for lora/qlora, the HF model for full.

    Precision: weights that train are fp32 and the forward runs under bf16 autocast when the resolved dtype is
    bf16 (`token_losses` applies it); on CUDA the frozen base of lora/qlora is stored in the compute dtype.
    """
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    compute_dtype = resolve_dtype(model_cfg.dtype, device)
    attn, attn_reason = attention_choice(model_cfg.attn_implementation, device, compute_dtype)
    hf_attn = attn  # the name transformers dispatches on
    if attn == "torch_varlen":
        register_torch_varlen()
        hf_attn = TORCH_VARLEN
    frozen_base = peft_cfg.method in ("lora", "qlora")
    store_dtype = compute_dtype if (device.type == "cuda" and frozen_base) else torch.float32

    source = model_cfg.path
    model: nn.Module | None = None
    if model_cfg.init is not None:
        config = build_init_config(model_cfg.init, vocab_size)
        try:
            fresh = AutoModelForCausalLM.from_config(config, attn_implementation=hf_attn, dtype=torch.float32)
        except ValueError as exc:
            if attn in ("sdpa", "eager"):
                raise
            raise _unsupported_attention(attn, init=model_cfg.init.model_type, exc=exc) from exc
        if frozen_base:
            # A LoRA adapter must name a base that can be loaded again (Contract 2): keep the random init on disk.
            source = _materialise_init_base(fresh)
            fresh.config._name_or_path = source
            fresh.name_or_path = source  # what peft records as base_model_name_or_path
        if peft_cfg.method != "qlora":
            model = fresh.to(store_dtype)
    if model is None:
        assert source is not None
        kwargs: dict[str, Any] = {"dtype": store_dtype, "attn_implementation": hf_attn,
                                  "trust_remote_code": model_cfg.trust_remote_code}
        if peft_cfg.method == "qlora":
            kwargs["quantization_config"] = _quantization_config(compute_dtype, device)
            kwargs["device_map"] = {"": device.index if device.type == "cuda" and device.index is not None
                                    else str(device)}
        try:
            with quiet_load():
                model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            if attn not in ("sdpa", "eager") and "attention" in str(exc):
                raise _unsupported_attention(attn, init=None, exc=exc) from exc
            raise ValueError(f"model.path: cannot load a causal LM from {source!r}: {exc}") from exc

    rows = model.get_input_embeddings().weight.shape[0]
    if vocab_size > rows:
        if peft_cfg.method != "full":
            raise ValueError(
                f"model.tokenizer: {vocab_size} tokens but the model's embedding has {rows} rows; a frozen "
                "(lora/qlora) base cannot learn new embeddings: use the model's own tokenizer or peft.method full"
            )
        model.resize_token_embeddings(vocab_size)

    model.config.use_cache = False
    if model_cfg.moe_aux_loss_coef is not None and expert_counts(model.config) is not None:
        model.config.router_aux_loss_coef = model_cfg.moe_aux_loss_coef
    gc_kwargs = {"use_reentrant": False}  # non-reentrant: frozen inputs need no requires_grad hack, MoE aux works

    if peft_cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=model_cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs,
        )
    elif model_cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name goes in v6)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc_kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)

    hf = model
    if frozen_base:
        from mft_trainer.model.adapters import apply_lora

        model = apply_lora(model, peft_cfg)
    else:
        for param in model.parameters():
            param.requires_grad_(True)
    if peft_cfg.method != "qlora":
        model = model.to(device)

    hf.mft_autocast_dtype = compute_dtype if compute_dtype != torch.float32 else None
    hf.mft_attn_implementation = attn
    # What mft-train logs in its first lines and records in mft_train.json.
    hf.mft_attention = {"requested": model_cfg.attn_implementation, "implementation": attn, "device": str(device),
                        "reason": attn_reason}
    hf.mft_packing_isolation = {}
    if attn == "sdpa":
        set_packed_attention(model, "segments")  # per micro-batch, where it pays: segment_attention_pays
    if attn != "flash_attention_2" and hf.config.model_type not in PACKING_VERIFIED_MODEL_TYPES:
        diff = verify_packing_isolation(model, attn)
        hf.mft_packing_isolation[attn] = diff
    model.train()
    return model
