"""Mixture-of-experts router load-balancing loss, counted over real tokens only (padding-aware).

Why we capture router logits with forward hooks instead of `model(..., output_router_logits=True)`: in
transformers 5.24 the MoE causal-LM forward (mixtral, qwen2_moe) feeds its `attention_mask` argument straight
into `load_balancing_loss_func`, which expects a 2-D `[B, L]` padding mask. Our packed batches pass a 4-D
block-causal mask there, which that function cannot read (its shapes no longer match), so we ask the model for
nothing and record each router's logits ourselves, from the same router classes transformers declares in
`_can_record_outputs["router_logits"]`. The loss itself is transformers' own `load_balancing_loss_func`
(Switch Transformer eqs. 4-6), which weights every per-token term by the 2-D mask we give it: we pass
`segment_ids != 0`, so padding neither counts as routed tokens nor enters the denominator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# transformers config attribute names for (number of experts, experts per token), by family.
_EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
_TOP_K_KEYS = ("num_experts_per_tok", "moe_top_k", "top_k")


def expert_counts(config: object) -> tuple[int, int] | None:
    """(number of experts, experts per token) for an MoE config, None for a dense model."""
    num_experts = next((getattr(config, k) for k in _EXPERT_COUNT_KEYS if getattr(config, k, None)), None)
    top_k = next((getattr(config, k) for k in _TOP_K_KEYS if getattr(config, k, None)), None)
    if num_experts is None or top_k is None:
        return None
    return int(num_experts), int(top_k)


def router_recorder(model: nn.Module) -> tuple[type[nn.Module], int] | None:
    """The router module class and the index of its logits in the router's output, as transformers declares it.

    Returns None for models without a declared router (dense models).
    """
    declared = getattr(type(model), "_can_record_outputs", None) or {}
    spec = declared.get("router_logits")
    if spec is None:
        return None
    target = getattr(spec, "target_class", spec)
    index = getattr(spec, "index", 0) or 0
    if not isinstance(target, type):
        return None
    return target, int(index)


@contextmanager
def capture_router_logits(model: nn.Module, router_class: type[nn.Module], index: int) -> Iterator[list[torch.Tensor]]:
    """Record the logits every router of `model` produces during the forward passes run inside the block.

    Each entry is one router call's `[B * L, num_experts]` logits, in layer order. Hooks are removed on exit, so
    a later activation-checkpointing recomputation (which replays the forward during backward) records nothing.
    """
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        logits = output[index] if isinstance(output, tuple | list) else output
        captured.append(logits)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, router_class)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def load_balancing_loss(
    router_logits: list[torch.Tensor], num_experts: int, top_k: int, token_mask: torch.Tensor
) -> torch.Tensor:
    """Switch-Transformer load-balancing loss over the real tokens (`token_mask` `[B, L]`, True/1 = real token).

    Uses transformers' implementation (identical in mixtral and qwen2_moe in 5.24) with the 2-D mask, which
    multiplies every token's routing counts and probabilities by the mask and divides by the number of real
    tokens: appending padding leaves the loss unchanged (tested).
    """
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    if not router_logits:
        raise ValueError("load_balancing_loss: no router logits were recorded; is this a mixture-of-experts model?")
    rows = token_mask.numel()
    for layer_logits in router_logits:
        if layer_logits.shape != (rows, num_experts):
            raise ValueError(
                f"load_balancing_loss: router logits of shape {tuple(layer_logits.shape)}, expected "
                f"({rows}, {num_experts}) = (batch * length, experts)"
            )
    loss = load_balancing_loss_func(tuple(router_logits), num_experts, top_k, token_mask.to(torch.float32))
    return loss
