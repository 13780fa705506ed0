"""The forward of a micro-batch and its per-token cross-entropy, with the LM head only at supervised positions.

    token_losses(model, batch, attn_implementation)   -> (token_loss [B, L] fp32, MoE aux loss or None)

The batch is the packed micro-batch of `data.packing.collate_rows` (`input_ids`, `targets` already shifted,
`position_ids` restarting per segment, `segment_ids` with 0 for padding, `task_ids`, `sample_ids`; all [B, L]).
How its segments are isolated depends on `attn_implementation` (what `build.attention_choice` resolved): sdpa
gets segment spans or the 4-D block mask (`attention.py`), eager the mask, flex_attention a BlockMask and
torch_varlen `cu_seqlens` (`native_attention.py`), flash_attention_2 the restarting position ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mft_trainer.data import packing
from mft_trainer.model.attention import (
    _SEGMENT_STATE,
    SEGMENT_SPANS_KWARG,
    check_packing_allowed,
    segment_attention_pays,
    uses_segment_attention,
)
from mft_trainer.model.moe import capture_router_logits, expert_counts, load_balancing_loss, router_recorder
from mft_trainer.model.native_attention import (
    _VARLEN_STATE,
    VARLEN_KWARG,
    check_flex_can_run,
    flex_block_mask,
    varlen_boundaries,
)
from mft_trainer.model.unwrap import hf_model


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
        spans = packing.segment_spans(batch["segment_ids"])
        segments = segment_attention_pays(spans, *batch["segment_ids"].shape)
        if segments:
            # All ones: transformers builds no 4-D mask (and does not guess packing from position_ids).
            kwargs["attention_mask"] = torch.ones_like(batch["segment_ids"])
            kwargs[SEGMENT_SPANS_KWARG] = spans
    varlen = attn_implementation == "torch_varlen"
    if not segments and attn_implementation in ("sdpa", "eager"):
        kwargs["attention_mask"] = packing.block_causal_mask(batch["segment_ids"], _compute_dtype(hf, autocast_dtype))
    elif attn_implementation == "flex_attention":
        check_flex_can_run(input_ids.device)
        kwargs["attention_mask"] = flex_block_mask(batch["segment_ids"])  # transformers passes a BlockMask through
    elif varlen:
        # All ones: transformers builds no 4-D mask; the boundaries carry the isolation.
        kwargs["attention_mask"] = torch.ones_like(batch["segment_ids"])
        kwargs[VARLEN_KWARG] = varlen_boundaries(batch["segment_ids"])
    elif attn_implementation not in ("sdpa", "flash_attention_2"):
        raise ValueError(f"attn_implementation: {attn_implementation!r}; expected sdpa, eager, flash_attention_2, "
                         "flex_attention or torch_varlen")
    recorder = router_recorder(hf) if expert_counts(hf.config) is not None else None
    _SEGMENT_STATE.expected = segments
    _VARLEN_STATE.expected = varlen
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
        _VARLEN_STATE.expected = False
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
    """Per-token cross-entropy of a micro-batch (the batch layout in this module's docstring) and the MoE auxiliary loss.

    Returns `token_loss` `[B, L]` float32, 0 where `targets == -100` (targets are already shifted), and for an
    MoE model `coef * load_balancing_loss` over the micro-batch's real tokens (`segment_ids != 0`), where coef is
    the model config's `router_aux_loss_coef` (set from `model.moe_aux_loss_coef`); None for dense models or
    coef 0. The aux term is a mean over this micro-batch's tokens: the loop adds it once per micro-batch divided
    by the number of micro-batches in the step. `autocast_dtype` defaults to what build_model resolved.
    """
    hf = hf_model(model)
    if autocast_dtype is _FROM_MODEL:
        autocast_dtype = getattr(hf, "mft_autocast_dtype", None)
    check_packing_allowed(hf, attn_implementation, batch["segment_ids"])
    targets = batch["targets"]
    keep = targets != packing.IGNORE_INDEX
    supervised = int(keep.sum())
    select = 0 < supervised < _SELECT_LOGITS_BELOW * keep.numel() and hf.get_output_embeddings() is not None
    logits, router_logits = _forward(model, hf, batch, attn_implementation, autocast_dtype,
                                     keep=keep if select else None)
    if select:  # logits [N, V] at the supervised positions only, scattered back into [B, L] (0 elsewhere)
        picked = F.cross_entropy(logits.float(), targets[keep], reduction="none")
        token_loss = torch.zeros(targets.shape, dtype=picked.dtype, device=picked.device).masked_scatter(keep, picked)
    else:
        token_loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=packing.IGNORE_INDEX, reduction="none"
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
