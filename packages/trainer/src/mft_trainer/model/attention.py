"""Packed attention: samples packed in one row never see each other.

Two ways for sdpa (and the 4-D mask for eager); flash_attention_2 (CUDA) gets only `position_ids`, from which
transformers derives the varlen boundaries. torch's own kernels (flex attention, varlen) are in
`native_attention.py`.

The 4-D additive block-causal mask (`data.packing.block_causal_mask`), one row, two segments, L = 6:

    segment_ids  1 1 1 2 2 0        mask[q, k] (0 = may attend, x = dtype min)
    position_ids 0 1 2 0 1 0        q0: 0 x x x x x      q3: x x x 0 x x
                                    q1: 0 0 x x x x      q4: x x x 0 0 x
                                    q2: 0 0 0 x x x      q5: x x x x x 0   (padding attends to itself)

Segment-wise sdpa: the mask makes every sdpa call cost O(L^2) over the whole row and keeps sdpa off its fused
causal kernel. Instead `build_model` switches the model to the attention function `SEGMENT_SDPA` (registered in
transformers' AttentionInterface), and `forward.token_losses` passes the spans of `packing.segment_spans`: one
`is_causal` sdpa call per segment (spans of equal bounds across rows batched into one call), so attention costs
sum(len_i^2). Each micro-batch takes whichever path `segment_attention_pays` estimates cheaper. Same semantics as
the mask on every real token (tests/model/test_segment_attention.py). Without spans (generation, any direct call)
the function is transformers' own sdpa, and `set_packed_attention(model, "mask")` brings back the mask path.

Every family the trainer names was measured to isolate segments (tests/model/test_families.py); a model type
outside that list is probed once when built (`forward.verify_packing_isolation`), and packed batches are refused
if it leaks (`check_packing_allowed`). Restarting position ids isolate segments with sdpa or eager only in a
call without any attention mask or cache (docs/reference.md §7), so the trainer never relies on them.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mft_trainer.model.unwrap import hf_model

# Model types whose packed-vs-separate logits were measured equal (max diff < 2e-7, fp32) with the 4-D additive
# block mask under both sdpa and eager in transformers 5.24 (tests/model/test_families.py re-measures every family).
PACKING_VERIFIED_MODEL_TYPES: frozenset[str] = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "gpt_bigcode", "starcoder2", "gpt_neox", "phi", "gemma"}
)
# Relative (to the logits' standard deviation) packed-vs-separate difference above which a probe says "leaks".
# Contamination measured 0.4-0.5 absolute on tiny models; fp32 noise is 1e-7, bf16 rounding about 4e-3.
ISOLATION_TOLERANCE = 3e-2


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
# lengths of instruction data, the overhead and the per-token term dominate, so rows of many short samples take the
# mask and long rows take segments. One full segment per row always takes the segment path (one fused causal call,
# no mask). The constants come from timing both paths (docs/experiments.md#attention-path-speed).
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


def check_packing_allowed(hf: nn.Module, attn_implementation: str, segment_ids: torch.Tensor) -> None:
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
    if measured > ISOLATION_TOLERANCE:
        raise ValueError(
            f"packing: model type {model_type!r} does not isolate packed segments with {attn_implementation} "
            f"(packed vs separate logits differ by {measured:.3g} of their std); it would train on text "
            "from neighbouring samples. Set packing: false or use another attn_implementation."
        )
