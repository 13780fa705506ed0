"""Load or build the causal LM, run it on a micro-batch to per-token losses, and save Contract 2 checkpoints.

    build_model(model_cfg, peft_cfg, vocab_size=V, device="cpu")   -> nn.Module (HF model or PeftModel), train mode
    token_losses(model, batch, attn_implementation)                 -> (token_loss [B, L] fp32, moe aux or None)
    save_pretrained_with_template(model, tokenizer, template, out)  -> out/ (weights or adapter + tokenizer with
                                                                       chat_template + generation_config EOS)

Packed rows are isolated in attention (REFERENCE.md section 7): with sdpa/eager we pass the 4-D additive
block-causal mask from `packing.block_causal_mask` (one row, two segments, L = 6):

    segment_ids  1 1 1 2 2 0        mask[q, k] (0 = may attend, x = dtype min)
    position_ids 0 1 2 0 1 0        q0: 0 x x x x x      q3: x x x 0 x x
                                    q1: 0 0 x x x x      q4: x x x 0 0 x
                                    q2: 0 0 0 x x x      q5: x x x x x 0   (padding attends to itself)

with flash_attention_2 (CUDA) we pass only `position_ids`, from which transformers derives the varlen
boundaries.

Segment-wise sdpa (the default for sdpa): the 4-D mask makes every sdpa call cost O(L^2) over the whole row and
keeps sdpa off its fused causal kernel. Instead build_model switches the model to the attention function
`SEGMENT_SDPA` (registered in transformers' AttentionInterface), and `token_losses` passes the spans of
`packing.segment_spans(segment_ids)`: one `is_causal` sdpa call per segment (spans of equal bounds across rows
are batched into one call; a batch of one full segment per row is a single call), so attention costs
sum(len_i^2). Each micro-batch takes whichever path `segment_attention_pays` estimates cheaper: the per-call
overhead makes segments lose to the mask on rows of many short samples (the CPU demo), and win on long rows. Same
semantics as the mask on every real token (tests/test_model_segment_attention.py). Without spans
(generation, any direct call) the function is transformers' own sdpa, and `set_packed_attention(model, "mask")`
brings back the 4-D mask path. Every family the trainer names was measured to isolate segments this way (tests/test_families.py);
a model type outside that list is probed once when built, and packed batches are refused if it leaks.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mft_trainer.model_config import ModelConfig, ModelInit, PeftSettings, flash_attn_available
from mft_trainer.moe import capture_router_logits, expert_counts, load_balancing_loss, router_recorder

# Model types whose packed-vs-separate logits were measured equal (max diff < 2e-7, fp32) with the 4-D additive
# block mask under both sdpa and eager in transformers 5.24 (tests/test_families.py re-measures every family).
PACKING_VERIFIED_MODEL_TYPES: frozenset[str] = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "gpt_bigcode", "starcoder2", "gpt_neox", "phi", "gemma"}
)
# Relative (to the logits' standard deviation) packed-vs-separate difference above which a probe says "leaks".
# Contamination measured 0.4-0.5 absolute on tiny models; fp32 noise is 1e-7, bf16 rounding about 4e-3.
_ISOLATION_TOLERANCE = 3e-2
_INIT_BASES: set[str] = set()  # temp dirs holding init-built base weights (copied into adapter checkpoints)
BASE_MODEL_SUBDIR = "base_model"


# --------------------------------------------------------------------------------------------------- resolution
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


def resolve_attn_implementation(requested: str, device: torch.device | str) -> str:
    """`auto` -> flash_attention_2 when flash-attn is installed and the device is CUDA, else sdpa."""
    device = torch.device(device)
    if requested == "auto":
        ok, _ = flash_attn_available()
        return "flash_attention_2" if ok and device.type == "cuda" else "sdpa"
    if requested == "flash_attention_2":
        ok, why = flash_attn_available()
        if not ok or device.type != "cuda":
            raise ValueError(f"model.attn_implementation: flash_attention_2 cannot run on {device}: "
                             f"{why or 'it needs a CUDA device'}")
    if requested not in ("sdpa", "eager", "flash_attention_2"):
        raise ValueError(f"model.attn_implementation: {requested!r}; expected auto, sdpa, eager or flash_attention_2")
    return requested


# ------------------------------------------------------------------------------------------------ unwrapping
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
        # bf16 storage lets FSDP/ZeRO-3 shard the packed 4-bit weights like any bf16 tensor (REFERENCE.md section 5).
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
    attn = resolve_attn_implementation(model_cfg.attn_implementation, device)
    compute_dtype = resolve_dtype(model_cfg.dtype, device)
    frozen_base = peft_cfg.method in ("lora", "qlora")
    store_dtype = compute_dtype if (device.type == "cuda" and frozen_base) else torch.float32

    source = model_cfg.path
    model: nn.Module | None = None
    if model_cfg.init is not None:
        config = build_init_config(model_cfg.init, vocab_size)
        fresh = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)
        if frozen_base:
            # A LoRA adapter must name a base that can be loaded again (Contract 2): keep the random init on disk.
            source = _materialise_init_base(fresh)
            fresh.config._name_or_path = source
            fresh.name_or_path = source  # what peft records as base_model_name_or_path
        if peft_cfg.method != "qlora":
            model = fresh.to(store_dtype)
    if model is None:
        assert source is not None
        kwargs: dict[str, Any] = {"dtype": store_dtype, "attn_implementation": attn,
                                  "trust_remote_code": model_cfg.trust_remote_code}
        if peft_cfg.method == "qlora":
            kwargs["quantization_config"] = _quantization_config(compute_dtype, device)
            kwargs["device_map"] = {"": device.index if device.type == "cuda" and device.index is not None
                                    else str(device)}
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
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
        from mft_trainer.peft_setup import apply_lora

        model = apply_lora(model, peft_cfg)
    else:
        for param in model.parameters():
            param.requires_grad_(True)
    if peft_cfg.method != "qlora":
        model = model.to(device)

    hf.mft_autocast_dtype = compute_dtype if compute_dtype != torch.float32 else None
    hf.mft_attn_implementation = attn
    hf.mft_packing_isolation = {}
    if attn == "sdpa":
        set_packed_attention(model, "segments")  # per micro-batch, where it pays: segment_attention_pays
    if attn != "flash_attention_2" and hf.config.model_type not in PACKING_VERIFIED_MODEL_TYPES:
        diff = verify_packing_isolation(model, attn)
        hf.mft_packing_isolation[attn] = diff
    model.train()
    return model


# ------------------------------------------------------------------------------------------ segment attention
SEGMENT_SDPA = "mft_segment_sdpa"
SEGMENT_SPANS_KWARG = "mft_segment_spans"
_SEGMENT_STATE = threading.local()  # .expected: token_losses is inside a forward that passed spans


def segment_sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: causal sdpa within each `(row, start, end)` span of `mft_segment_spans`.

    query `[B, H, L, D]`, key/value `[B, Hkv, L, D]`; returns `[B, L, H, D]` like transformers' sdpa. Without spans
    it IS transformers' sdpa (so generation and any direct call behave as `attn_implementation="sdpa"`). A 4-D
    mask that the model still built (a sliding window) is applied within each span.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    spans = kwargs.pop(SEGMENT_SPANS_KWARG, None)
    if spans is None:
        if getattr(_SEGMENT_STATE, "expected", False):
            raise RuntimeError(f"{type(module).__name__}: the model did not pass {SEGMENT_SPANS_KWARG} down to its "
                               "attention layers; packed segments would not be isolated. Use "
                               "modeling.set_packed_attention(model, 'mask') for this model type.")
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None:
        raise ValueError(f"{SEGMENT_SDPA}: position_bias / softcap are not supported; use the 4-D mask path")
    if query.shape[2] != key.shape[2]:
        raise ValueError(f"{SEGMENT_SDPA}: query length {query.shape[2]} != key length {key.shape[2]} (a cache?)")
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    batch, _, length, _ = query.shape

    def attend(rows: list[int], start: int, end: int) -> torch.Tensor:
        whole = len(rows) == batch
        idx = None if whole else torch.tensor(rows, device=query.device)

        def take(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :, start:end]
            return t.contiguous() if idx is None else t.index_select(0, idx)

        q, k, v = (take(t) for t in (query, key, value))
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, :, start:end, start:end]
            mask = mask if idx is None or mask.shape[0] == 1 else mask.index_select(0, idx)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                              is_causal=mask is None)

    by_bounds: dict[tuple[int, int], list[int]] = {}
    for row, start, end in spans:
        by_bounds.setdefault((start, end), []).append(row)
    if len(by_bounds) == 1:
        ((start, end), rows), = by_bounds.items()
        if start == 0 and end == length and len(rows) == batch:
            return attend(rows, 0, length).transpose(1, 2).contiguous(), None
    pieces: list[list[tuple[int, torch.Tensor]]] = [[] for _ in range(batch)]
    for (start, end), rows in by_bounds.items():
        out = attend(rows, start, end)
        for i, row in enumerate(rows):
            pieces[row].append((start, out[i]))
    rows_out = []
    for row, row_pieces in enumerate(pieces):
        row_pieces.sort(key=lambda p: p[0])
        covered = sum(p[1].shape[1] for p in row_pieces)
        if covered != length:
            raise ValueError(f"{SEGMENT_SDPA}: the spans of row {row} cover {covered} of {length} positions")
        rows_out.append(torch.cat([p[1] for p in row_pieces], dim=1))
    return torch.stack(rows_out).transpose(1, 2).contiguous(), None


def _register_segment_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(SEGMENT_SDPA, segment_sdpa_attention)
    # The same masks as sdpa, so direct calls (generation with padding) are exactly sdpa; token_losses passes a
    # 2-D all-ones mask, for which transformers builds no 4-D mask at all.
    ALL_MASK_ATTENTION_FUNCTIONS.register(SEGMENT_SDPA, sdpa_mask)


def set_packed_attention(model: nn.Module, kind: str) -> str:
    """How sdpa isolates packed segments: `segments` (per-segment causal sdpa) or `mask` (the 4-D block mask).

    Returns the kind in effect: `mask` when the model cannot switch its attention function (a model type not
    built on transformers' AttentionInterface). Only meaningful for sdpa models; eager always uses the mask.
    """
    hf = hf_model(model)
    if kind not in ("segments", "mask"):
        raise ValueError(f"packed attention: {kind!r}; expected segments or mask")
    current = hf.config._attn_implementation
    if current not in ("sdpa", SEGMENT_SDPA):
        return "mask"
    target = SEGMENT_SDPA if kind == "segments" else "sdpa"
    if current != target:
        if target == SEGMENT_SDPA:
            _register_segment_attention()
        hf.set_attn_implementation(target)
    return "segments" if hf.config._attn_implementation == SEGMENT_SDPA else "mask"


# Segment-wise sdpa vs the 4-D mask: a cost model in units of one query-key pair of the mask path (which runs one
# masked sdpa call over all B * L^2 pairs). A segment costs a fixed overhead per call (the kernel's setup, the slices
# and their backward, the concatenation) plus a per-token term, plus its causal half of len^2 pairs: on CPU, for the
# lengths of instruction data, the overhead and the per-token term dominate. Calibrated 2026-11-26 (bf16, 6 heads of
# 32; sdpa forward+backward per span 0.4-0.5 ms + 0.0095-0.013 ms/token, the mask 1.5-3e-5 ms per pair, 1-2 threads,
# doubled for the slicing around the call). Whole demo MFT step (seq 512, 6 rows, ~22 segments of 50-250 tokens):
# the mask 1.45x faster than segments at 2 threads, 1.34x at 1 thread. benchmarks/train_step_speed.py --model demo
# (bf16, 2 threads), segments vs the mask: 1.26x at seq 2048 Evol-like rows, 0.89x at seq 1024, 0.87x at seq 256,
# 0.57x on demo-like rows at seq 512; this choice ran at 1.00-1.07x the faster of the two in each. One full segment
# per row always takes the segment path (one fused causal call, no mask).
SEGMENT_CALL_COST = 50_000
SEGMENT_TOKEN_COST = 800
SEGMENT_COST_SCALE = 1.0  # 0 forces the segment path wherever spans exist (tests comparing the two paths)


def segment_attention_pays(spans: tuple[tuple[int, int, int], ...], batch: int, length: int) -> bool:
    """Whether segment-wise sdpa is cheaper than the 4-D mask for these spans (the cost model above)."""
    if len(spans) == batch and all(start == 0 and end == length for _, start, end in spans):
        return True
    cost = sum(SEGMENT_CALL_COST + SEGMENT_TOKEN_COST * (end - start) + (end - start) ** 2 / 2
               for _, start, end in spans)
    return SEGMENT_COST_SCALE * cost <= batch * length * length


def uses_segment_attention(hf: nn.Module) -> bool:
    return getattr(hf.config, "_attn_implementation", None) == SEGMENT_SDPA


# ------------------------------------------------------------------------------------------------ the forward
def _block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    from mft_trainer.packing import block_causal_mask  # owned by the data half; imported lazily

    return block_causal_mask(segment_ids, dtype)


def _compute_dtype(hf: nn.Module, autocast_dtype: torch.dtype | None) -> torch.dtype:
    if autocast_dtype is not None:
        return autocast_dtype
    return hf.get_input_embeddings().weight.dtype


@contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        with nullcontext():
            yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def _check_packing_allowed(hf: nn.Module, attn_implementation: str, segment_ids: torch.Tensor) -> None:
    model_type = hf.config.model_type
    if attn_implementation == "flash_attention_2" or model_type in PACKING_VERIFIED_MODEL_TYPES:
        return
    if not bool((segment_ids.amax(dim=1) > 1).any()):
        return  # one segment per row: an ordinary padded batch
    measured = getattr(hf, "mft_packing_isolation", {}).get(attn_implementation)
    if measured is None:
        raise ValueError(
            f"packing: model type {model_type!r} has not been checked for segment isolation with "
            f"{attn_implementation}; build it with modeling.build_model (which probes it) or set packing: false"
        )
    if measured > _ISOLATION_TOLERANCE:
        raise ValueError(
            f"packing: model type {model_type!r} does not isolate packed segments with {attn_implementation} "
            f"(packed vs separate logits differ by {measured:.3g} of their std); it would train on text "
            "from neighbouring samples. Set packing: false or use another attn_implementation."
        )


# Below this fraction of supervised positions in a micro-batch, the LM head runs on those positions only.
_SELECT_LOGITS_BELOW = 0.9


@contextmanager
def _lm_head_only_at(hf: nn.Module, keep: torch.Tensor | None) -> Iterator[list[int]]:
    """While active, the model's LM head sees only the hidden states at `keep` ([B, L] bool) positions.

    A forward pre-hook on `get_output_embeddings()` replaces its input `[B, L, H]` by `hidden[keep]` `[N, H]`, so
    the model returns logits `[N, V]` in row-major order of `keep`. Why not transformers' `logits_to_keep`: it
    keeps the same positions in every row, and packed rows put their prompts at different positions. Why not
    run the head ourselves on the hidden states: FSDP2 and ZeRO-3 gather the head's weights only inside the
    model's forward. Prompt positions carry no loss, so their logits (the head's matmul, the fp32 copy and the
    softmax over the whole vocabulary) are pure cost: on a tiny llama (vocab 4096, seq 512, 60% supervised) a step
    ran 1.19x faster (benchmarks/train_step_speed.py), and on a 152k-vocabulary model they are most of the activation memory.
    """
    calls: list[int] = []
    head = hf.get_output_embeddings() if keep is not None else None
    if head is None:
        yield calls
        return

    def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        hidden = args[0]
        if tuple(hidden.shape[:2]) != tuple(keep.shape):
            raise RuntimeError(
                f"LM head input {tuple(hidden.shape)} does not match the batch {tuple(keep.shape)}; "
                "this model does not call its output embeddings once on all positions"
            )
        calls.append(int(hidden.shape[0]))
        return (hidden[keep], *args[1:]), kwargs

    handle = head.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def _forward(model: nn.Module, hf: nn.Module, batch: Mapping[str, torch.Tensor], attn_implementation: str,
             autocast_dtype: torch.dtype | None,
             keep: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Logits `[B, L, V]` (as computed), or `[N, V]` at the `keep` positions, and an MoE model's router logits."""
    input_ids = batch["input_ids"]
    kwargs: dict[str, Any] = {"position_ids": batch["position_ids"], "use_cache": False}
    segments = False
    if attn_implementation == "sdpa" and uses_segment_attention(hf):
        from mft_trainer import packing

        spans = packing.segment_spans(batch["segment_ids"])
        segments = segment_attention_pays(spans, *batch["segment_ids"].shape)
        if segments:
            # All ones: transformers builds no 4-D mask (and does not guess packing from position_ids).
            kwargs["attention_mask"] = torch.ones_like(batch["segment_ids"])
            kwargs[SEGMENT_SPANS_KWARG] = spans
    if not segments and attn_implementation in ("sdpa", "eager"):
        kwargs["attention_mask"] = _block_causal_mask(batch["segment_ids"], _compute_dtype(hf, autocast_dtype))
    elif attn_implementation not in ("sdpa", "flash_attention_2"):
        raise ValueError(f"attn_implementation: {attn_implementation!r}; expected sdpa, eager or flash_attention_2")
    recorder = router_recorder(hf) if expert_counts(hf.config) is not None else None
    _SEGMENT_STATE.expected = segments
    try:
        with _autocast(input_ids.device, autocast_dtype), _lm_head_only_at(hf, keep) as head_calls:
            if recorder is None:
                logits, router = model(input_ids=input_ids, **kwargs).logits, None
            else:
                with capture_router_logits(hf, *recorder) as router_logits:
                    logits = model(input_ids=input_ids, **kwargs).logits
                router = list(router_logits)
    finally:
        _SEGMENT_STATE.expected = False
    if keep is not None and len(head_calls) != 1:
        raise RuntimeError(f"expected the LM head to run once per forward, it ran {len(head_calls)} times")
    return logits, router


_FROM_MODEL: Any = object()


def token_losses(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    attn_implementation: str,
    *,
    autocast_dtype: torch.dtype | None = _FROM_MODEL,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token cross-entropy of a micro-batch (contract in TRAINER_INTERFACES.md) and the MoE auxiliary loss.

    Returns `token_loss` `[B, L]` float32, 0 where `targets == -100` (targets are already shifted), and for an
    MoE model `coef * load_balancing_loss` over the micro-batch's real tokens (`segment_ids != 0`), where coef is
    the model config's `router_aux_loss_coef` (set from `model.moe_aux_loss_coef`); None for dense models or
    coef 0. The aux term is a mean over this micro-batch's tokens: the loop adds it once per micro-batch divided
    by the number of micro-batches in the step. `autocast_dtype` defaults to what build_model resolved.
    """
    hf = hf_model(model)
    if autocast_dtype is _FROM_MODEL:
        autocast_dtype = getattr(hf, "mft_autocast_dtype", None)
    _check_packing_allowed(hf, attn_implementation, batch["segment_ids"])
    targets = batch["targets"]
    keep = targets != -100
    supervised = int(keep.sum())
    select = 0 < supervised < _SELECT_LOGITS_BELOW * keep.numel() and hf.get_output_embeddings() is not None
    logits, router_logits = _forward(model, hf, batch, attn_implementation, autocast_dtype,
                                     keep=keep if select else None)
    if select:  # logits [N, V] at the supervised positions only, scattered back into [B, L] (0 elsewhere)
        picked = F.cross_entropy(logits.float(), targets[keep], reduction="none")
        token_loss = torch.zeros(targets.shape, dtype=picked.dtype, device=picked.device).masked_scatter(keep, picked)
    else:
        token_loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
        ).view(targets.shape)

    aux = None
    coef = float(getattr(hf.config, "router_aux_loss_coef", 0.0) or 0.0)
    counts = expert_counts(hf.config)
    if router_logits is not None and counts is not None and coef > 0:
        aux = coef * load_balancing_loss(router_logits, counts[0], counts[1], batch["segment_ids"] != 0)
    return token_loss, aux


@torch.no_grad()
def verify_packing_isolation(model: nn.Module, attn_implementation: str, *, seed: int = 0) -> float:
    """Pack two random sequences (+ padding) in one row and compare with separate runs.

    Returns the largest |packed - separate| logit difference divided by the logits' standard deviation: about
    1e-7 when segments are isolated (fp32), 0.1-1 when one segment sees the other.
    """
    hf = hf_model(model)
    was_training = model.training
    model.eval()
    device = hf.get_input_embeddings().weight.device
    vocab = hf.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(seed)
    lengths = (6, 5)
    seqs = [torch.randint(0, vocab, (1, n), generator=generator) for n in lengths]
    pad = 3
    ids = torch.cat([*seqs, torch.zeros(1, pad, dtype=torch.long)], dim=1)
    segment_ids = torch.tensor([[1] * lengths[0] + [2] * lengths[1] + [0] * pad])
    position_ids = torch.tensor([list(range(lengths[0])) + list(range(lengths[1])) + [0] * pad])

    def run(input_ids: torch.Tensor, seg: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        batch = {"input_ids": input_ids.to(device), "segment_ids": seg.to(device), "position_ids": pos.to(device)}
        logits, _ = _forward(model, hf, batch, attn_implementation, getattr(hf, "mft_autocast_dtype", None))
        return logits.float()[0]

    try:
        packed = run(ids, segment_ids, position_ids)
        diffs = []
        start = 0
        for seq in seqs:
            n = seq.shape[1]
            alone = run(seq, torch.ones(1, n, dtype=torch.long), torch.arange(n)[None])
            diffs.append((packed[start:start + n] - alone).abs().max())
            start += n
        scale = packed[: start].std().clamp_min(1e-6)
        return float(torch.stack(diffs).max() / scale)
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------------------------ saving
@contextmanager
def atomic_directory(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `out_dir`, on error it is removed."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _chat_template_string(template: Any, tokenizer: Any) -> str:
    if isinstance(template, str):
        return template
    from mft_trainer.template import to_chat_template  # owned by the data half; imported lazily

    return to_chat_template(template, tokenizer)


def _generation_config(hf: nn.Module, tokenizer: Any, eos_id: int) -> Any:
    from transformers import GenerationConfig

    existing = getattr(hf, "generation_config", None)
    gen = copy.deepcopy(existing) if existing is not None else GenerationConfig.from_model_config(hf.config)
    gen.eos_token_id = eos_id
    gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    gen.bos_token_id = tokenizer.bos_token_id
    return gen


def save_pretrained_with_template(
    model: nn.Module,
    tokenizer: Any,
    template: Any,
    out_dir: str | Path,
    *,
    eos_token: str | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    extra_files: Mapping[str, str | Path] | None = None,
) -> Path:
    """Write Contract 2 to `out_dir` atomically (temp sibling, then rename) and return it.

    - full model: `model.safetensors` + `config.json`; LoRA/QLoRA: `adapter_model.safetensors` +
      `adapter_config.json` naming the base. A base built from `model.init` (no directory of its own) is copied
      into `out_dir/base_model/` and named `base_model`, a path relative to the adapter directory.
    - the tokenizer with `chat_template` = `template` (a Jinja string, or a template config passed through
      `template.to_chat_template`), and `generation_config.json` whose eos_token_id is `eos_token` (default: the
      tokenizer's EOS, which is the token the MFTCoder template ends assistant turns with).
    - `state_dict`: a full (gathered) state dict for sharded backends (FSDP2 / ZeRO-3); call on rank 0 only.
    - `extra_files`: {name in out_dir: source file} copied in before the rename (e.g. mft_train.json).
    """
    from peft import PeftModel

    out_dir = Path(out_dir).absolute()
    model = unwrap_model(model)
    hf = hf_model(model)
    eos = eos_token if eos_token is not None else tokenizer.eos_token
    eos_id = tokenizer.convert_tokens_to_ids(eos) if eos is not None else None
    if eos_id is None or (tokenizer.unk_token_id is not None and eos_id == tokenizer.unk_token_id and eos != tokenizer.unk_token):
        raise ValueError(f"save: EOS token {eos!r} is not in the tokenizer's vocabulary")
    chat_template = _chat_template_string(template, tokenizer)

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = chat_template
    if tok.eos_token != eos:
        tok.eos_token = eos
    generation_config = _generation_config(hf, tok, eos_id)
    hf.config.eos_token_id = eos_id
    hf.config.pad_token_id = generation_config.pad_token_id
    hf.config.bos_token_id = tok.bos_token_id

    with atomic_directory(out_dir) as tmp:
        if isinstance(model, PeftModel):
            model.save_pretrained(str(tmp), state_dict=state_dict)
            base = model.peft_config["default"].base_model_name_or_path or ""
            if os.path.realpath(base) in _INIT_BASES:
                shutil.copytree(base, tmp / BASE_MODEL_SUBDIR)
                generation_config.save_pretrained(str(tmp / BASE_MODEL_SUBDIR))
                config_path = tmp / "adapter_config.json"
                adapter_config = json.loads(config_path.read_text())
                # Relative to the adapter directory (merge.resolve_base reads it so): callers often write to a
                # temp dir and rename it, and run directories move, so an absolute path would go stale.
                adapter_config["base_model_name_or_path"] = BASE_MODEL_SUBDIR
                config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
        else:
            hf.generation_config = generation_config
            hf.save_pretrained(str(tmp), state_dict=state_dict)
        tok.save_pretrained(str(tmp))
        generation_config.save_pretrained(str(tmp))
        for name, source in (extra_files or {}).items():
            shutil.copy2(source, tmp / name)
    return out_dir
