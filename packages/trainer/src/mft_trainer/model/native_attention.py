"""Packed attention on torch's own kernels: varlen (CUDA) and flex attention (CUDA; CPU inference only).

Neither needs the flash-attn package. Both take the segment boundaries of the packed micro-batch
(`data.packing.collate_rows`) explicitly, never from position ids:

    torch_varlen    `torch.nn.attention.varlen.varlen_attn` (flash kernels inside torch) over the micro-batch's
                    tokens flattened to [B * L, H, D], with `cu_seqlens` from `varlen_boundaries`. Registered in
                    transformers' AttentionInterface as `TORCH_VARLEN`; `forward.token_losses` passes the boundaries
                    as the `VARLEN_KWARG` keyword, which transformers hands to every attention layer. Without them
                    (generation, any direct call) the function IS transformers' sdpa.
    flex_attention  transformers' own `flex_attention` implementation, given the `BlockMask` of
                    `flex_block_mask` as `attention_mask` (transformers passes a ready BlockMask through unchanged).
                    torch 2.13 has no flex backward on the CPU ("FlexAttention does not support backward on CPU"),
                    so on the CPU it serves no-grad forwards (validation) only.

One packed micro-batch, B = 2, L = 6 (0 = padding):

    segment_ids   [[1 1 1 2 2 0]          flattened token index  0 1 2 3 4 5 | 6 7 8 9 10 11
                   [1 1 1 1 2 2]]         spans (row, start, end) (0,0,3) (0,3,6) (1,0,4) (1,4,6)
    cu_seqlens    [0, 3, 6, 10, 12]       (the trailing padding of row 0 joins segment 2: causal attention keeps
    max_seqlen    4                        every real token from seeing it, and padding carries no loss)

    flex mask_mod(b, h, q, k) = segment_ids[b, q] == segment_ids[b, k] and k <= q   (row 0 drawn, 1 = attend)
              q0 [1 . . . . .]   q3 [. . . 1 . .]
              q1 [1 1 . . . .]   q4 [. . . 1 1 .]
              q2 [1 1 1 . . .]   q5 [. . . . . 1]   (padding attends to padding, never a real token to it)
"""

from __future__ import annotations

import importlib.util
import inspect
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mft_trainer.data import packing

TORCH_VARLEN = "mft_torch_varlen"
VARLEN_KWARG = "mft_varlen_boundaries"
_VARLEN_STATE = threading.local()  # .expected: token_losses is inside a forward that passed boundaries


# ------------------------------------------------------------------------------------------------- availability
def varlen_available(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether `torch_varlen` can run on `device` (default: cuda), and if not, why (for error messages).

    Args:
        device: the training device; None checks the current CUDA device.

    Returns:
        `(True, "")`, or `(False, reason)`: no `torch.nn.attention.varlen` in this torch, a non-CUDA device, no
        CUDA device visible, or a GPU older than compute capability 8.0 (torch's flash kernels need sm80+).
    """
    if importlib.util.find_spec("torch.nn.attention.varlen") is None:
        return False, f"torch {torch.__version__} has no torch.nn.attention.varlen (it needs torch >= 2.10)"
    device = torch.device(device if device is not None else "cuda")
    if device.type != "cuda":
        return False, f"torch's varlen_attn runs flash kernels on CUDA only, and the device is {device}"
    if not torch.cuda.is_available():
        return False, "no CUDA device is available (torch's varlen_attn runs on NVIDIA GPUs only)"
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8:
        return False, f"the GPU has compute capability {major}.x; torch's flash kernels need 8.0 or newer"
    return True, ""


def flex_available() -> tuple[bool, str]:
    """Whether this torch has `torch.nn.attention.flex_attention` (and transformers can dispatch to it)."""
    if importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
        return False, f"torch {torch.__version__} has no torch.nn.attention.flex_attention"
    return True, ""


# ------------------------------------------------------------------------------------------------- varlen
def varlen_boundaries(segment_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`cu_seqlens` and `max_seqlen` of a packed micro-batch, for its tokens flattened row-major to [B * L].

    Args:
        segment_ids: `[B, L]` int, 0 for padding (the layout of `data.packing.collate_rows`).

    Returns:
        `(cu_seqlens, max_seqlen)`: int32 `[N + 1]` on `segment_ids.device`, the start of every span of
        `packing.segment_spans` (trailing padding merged into the segment before it) in the flattened
        micro-batch, then `B * L`; and the longest span as a Python int. The drawn example is in this module's
        docstring. One host sync (the spans are read into Python once).
    """
    batch, length = segment_ids.shape
    spans = packing.segment_spans(segment_ids)
    starts = [row * length + start for row, start, _ in spans] + [batch * length]
    longest = max((end - start for _, start, end in spans), default=0)
    return torch.tensor(starts, dtype=torch.int32, device=segment_ids.device), longest


def varlen_kernel() -> Callable[..., torch.Tensor]:
    """torch's `varlen_attn` (a function, so tests can put a CPU reference kernel in its place)."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn


def varlen_call_kwargs(kernel: Callable[..., Any], *, scale: float | None, gqa: bool, sliding_window: int | None,
                       max_seqlen: int) -> dict[str, Any]:
    """Keyword arguments for causal `varlen_attn` in the installed torch's own terms.

    torch 2.10 took `is_causal=True`; 2.11 and later take `window_size=(left, 0)` (left -1 = unbounded) and
    `enable_gqa`. A sliding window is passed as transformers' flash path does (`sliding_window - 1` tokens back)
    when a segment is longer than it.

    Args:
        kernel: the `varlen_attn` to call (its signature decides the names).
        scale: the softmax scale the model asked for, None for 1/sqrt(D).
        gqa: True when key/value have fewer heads than the query.
        sliding_window: the layer's window, or None.
        max_seqlen: the longest segment of the micro-batch.

    Returns:
        The kwargs, and `enable_gqa` only where the kernel has it (the caller repeats key/value heads otherwise).
    """
    params = inspect.signature(kernel).parameters
    window = sliding_window is not None and max_seqlen > sliding_window
    kwargs: dict[str, Any] = {"scale": scale}
    if "window_size" in params:
        kwargs["window_size"] = (sliding_window - 1 if window else -1, 0)
    elif "is_causal" in params:
        if window:
            raise ValueError(f"{TORCH_VARLEN}: this torch's varlen_attn has no window_size, and a segment of "
                             f"{max_seqlen} tokens exceeds the model's sliding window {sliding_window}")
        kwargs["is_causal"] = True
    else:
        raise ValueError(f"{TORCH_VARLEN}: unknown varlen_attn signature {tuple(params)}")
    if gqa and "enable_gqa" in params:
        kwargs["enable_gqa"] = True
    return kwargs


def torch_varlen_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: causal varlen attention over the `VARLEN_KWARG` boundaries.

    Args:
        module: the attention layer (for `num_key_value_groups`).
        query: `[B, H, L, D]`; key, value: `[B, Hkv, L, D]`.
        attention_mask: ignored with boundaries (they carry the isolation); transformers' sdpa uses it without.
        dropout, scaling, is_causal, sliding_window: as transformers passes them.
        **kwargs: `VARLEN_KWARG` = `(cu_seqlens, max_seqlen)` from `varlen_boundaries`, plus the model's own.

    Returns:
        `([B, L, H, D], None)` like transformers' sdpa. Without boundaries it IS transformers' sdpa.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    boundaries = kwargs.pop(VARLEN_KWARG, None)
    if boundaries is None:
        if getattr(_VARLEN_STATE, "expected", False):
            raise RuntimeError(f"{type(module).__name__}: the model did not pass {VARLEN_KWARG} down to its "
                               "attention layers; packed segments would not be isolated. Use "
                               "model.attn_implementation: sdpa for this model type.")
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, sliding_window=sliding_window, **kwargs)
    if dropout:
        raise ValueError(f"{TORCH_VARLEN}: attention dropout {dropout} is not supported (varlen_attn has none); "
                         "set the model's attention_dropout to 0 or use sdpa")
    if kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None:
        raise ValueError(f"{TORCH_VARLEN}: position_bias / softcap are not supported; use sdpa")
    cu_seqlens, max_seqlen = boundaries
    batch, heads, length, dim = query.shape
    if key.shape[2] != length:
        raise ValueError(f"{TORCH_VARLEN}: query length {length} != key length {key.shape[2]} (a cache?)")
    kernel = varlen_kernel()
    call = varlen_call_kwargs(kernel, scale=scaling, gqa=key.shape[1] != heads, sliding_window=sliding_window,
                              max_seqlen=max_seqlen)
    if key.shape[1] != heads and "enable_gqa" not in call:
        groups = heads // key.shape[1]
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)

    target = _kernel_dtype(query, key, value)
    if target is not None:
        query, key, value = query.to(target), key.to(target), value.to(target)

    def tokens(t: torch.Tensor) -> torch.Tensor:  # [B, h, L, D] -> [B * L, h, D]
        return t.transpose(1, 2).reshape(batch * length, t.shape[1], dim)

    out = kernel(tokens(query), tokens(key), tokens(value), cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, **call)
    return out.view(batch, length, heads, dim), None


_HALF = (torch.bfloat16, torch.float16)


def _kernel_dtype(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.dtype | None:
    """The dtype to cast q/k/v to for the flash kernels (bf16/fp16 only), or None to leave them.

    Under autocast the projections are bf16 but RoPE multiplies q and k by fp32 cos/sin, so they arrive in fp32
    (transformers' flash path casts them back the same way). fp32 without autocast is left as it is: build_model
    refuses torch_varlen in fp32, and a CPU reference kernel in tests takes fp32.
    """
    if all(t.dtype in _HALF for t in (query, key, value)):
        return None
    device_type = query.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return value.dtype if value.dtype in _HALF else None


def register_torch_varlen() -> None:
    """Register `TORCH_VARLEN` in transformers' AttentionInterface (and sdpa's masks for direct calls)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(TORCH_VARLEN, torch_varlen_attention)
    # token_losses passes a 2-D all-ones mask, for which sdpa_mask builds no 4-D mask at all.
    ALL_MASK_ATTENTION_FUNCTIONS.register(TORCH_VARLEN, sdpa_mask)


# ------------------------------------------------------------------------------------------------- flex
def flex_block_mask(segment_ids: torch.Tensor) -> Any:
    """The flex-attention `BlockMask` of a packed micro-batch: causal within each segment (module docstring).

    Args:
        segment_ids: `[B, L]` int, 0 for padding.

    Returns:
        A `torch.nn.attention.flex_attention.BlockMask` of shape `[B, 1, L, L]` on `segment_ids.device`; only
        blocks that hold an allowed pair are computed. On CUDA the mask is built compiled (no [B, L, L] tensor).
        Like the 4-D mask of `packing.block_causal_mask`, it is fully causal within a segment: a model's sliding
        window is not applied (torch_varlen applies it; it matters only for segments longer than the window).
    """
    from torch.nn.attention.flex_attention import create_block_mask

    seg = segment_ids

    def same_segment_causal(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (seg[b, q] == seg[b, k]) & (k <= q)

    batch, length = seg.shape
    return create_block_mask(same_segment_causal, batch, None, length, length, device=seg.device,
                             _compile=seg.is_cuda)


def check_flex_can_run(query_device: torch.device) -> None:
    """Refuse a training (grad-enabled) forward with flex attention on the CPU, naming the key."""
    if query_device.type == "cpu" and torch.is_grad_enabled():
        raise ValueError(
            f"model.attn_implementation: flex_attention cannot train on the CPU: torch {torch.__version__}'s flex "
            "attention has no CPU backward (inference only); use auto or sdpa on the CPU"
        )
