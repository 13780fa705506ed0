"""MoE router load-balancing loss: equal to transformers' own on unpadded batches, unchanged by padding, scaled by
the configured coefficient, trains the router; LoRA on the fused expert weights merges exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mft_trainer.config.model import ModelConfig, PeftSettings
from mft_trainer.model import build, forward, save, unwrap
from mft_trainer.model.merge import merge_adapter
from mft_trainer.model.moe import expert_counts
from trainer_testkit import tiny_tokenizer, tiny_tokenizer_dir

MOE_INIT = {
    "mixtral": dict(architecture="mixtral", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(architecture="qwen2_moe", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=32, shared_expert_intermediate_size=64),
}


def build_tiny(arch: str, coef: float | None, peft: PeftSettings | None = None) -> torch.nn.Module:
    cfg = ModelConfig(init=MOE_INIT[arch], tokenizer=str(tiny_tokenizer_dir()), dtype="fp32",
                      attn_implementation="sdpa", moe_aux_loss_coef=coef)
    torch.manual_seed(0)
    return build.build_model(cfg, peft or PeftSettings(method="full"), vocab_size=len(tiny_tokenizer()))


def batch_of(rows: list[list[int]], length: int) -> dict[str, torch.Tensor]:
    out = {k: [] for k in ("input_ids", "targets", "position_ids", "segment_ids", "task_ids", "sample_ids")}
    for i, ids in enumerate(rows):
        pad = length - len(ids)
        out["input_ids"].append(ids + [0] * pad)
        out["targets"].append(ids[1:] + [-100] * (pad + 1))
        out["position_ids"].append(list(range(len(ids))) + [0] * pad)
        out["segment_ids"].append([1] * len(ids) + [0] * pad)
        out["task_ids"].append([0] * len(ids) + [-1] * pad)
        out["sample_ids"].append([i] * len(ids) + [-1] * pad)
    return {k: torch.tensor(v) for k, v in out.items()}


def rows(seed: int, lengths: tuple[int, ...]) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, len(tiny_tokenizer()), (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("arch", list(MOE_INIT))
def test_aux_equals_transformers_on_unpadded_batch(arch: str) -> None:
    model = build_tiny(arch, coef=0.05).eval()
    batch = batch_of(rows(0, (10, 10)), 10)
    with torch.no_grad():
        _, aux = forward.token_losses(model, batch, "sdpa")
        reference = model(input_ids=batch["input_ids"], output_router_logits=True, use_cache=False).aux_loss
    assert aux is not None
    torch.testing.assert_close(aux, 0.05 * reference, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("arch", list(MOE_INIT))
def test_aux_ignores_padding(arch: str) -> None:
    model = build_tiny(arch, coef=1.0).eval()
    samples = rows(1, (6, 11, 3))
    tight = batch_of(samples, 11)
    loose = batch_of(samples, 32)
    with torch.no_grad():
        _, aux_tight = forward.token_losses(model, tight, "sdpa")
        _, aux_loose = forward.token_losses(model, loose, "sdpa")
        # transformers' own loss without the mask counts the padding's routing: a different number.
        unmasked = model(input_ids=loose["input_ids"], output_router_logits=True, use_cache=False).aux_loss
    torch.testing.assert_close(aux_loose, aux_tight, rtol=1e-6, atol=1e-7)
    assert abs(float(unmasked) - float(aux_tight)) > 1e-4


def test_coefficient_scales_and_zero_disables() -> None:
    samples = batch_of(rows(2, (9, 7)), 9)
    with torch.no_grad():
        _, a = forward.token_losses(build_tiny("mixtral", coef=0.01).eval(), samples, "sdpa")
        _, b = forward.token_losses(build_tiny("mixtral", coef=0.03).eval(), samples, "sdpa")
        _, none = forward.token_losses(build_tiny("mixtral", coef=0.0).eval(), samples, "sdpa")
        default_model = build_tiny("mixtral", coef=None).eval()
        _, default = forward.token_losses(default_model, samples, "sdpa")
    torch.testing.assert_close(b, 3 * a)
    assert none is None
    # None keeps the config's own router_aux_loss_coef (transformers' MixtralConfig default).
    torch.testing.assert_close(default, a * default_model.config.router_aux_loss_coef / 0.01)
    assert expert_counts(default_model.config) == (4, 2)


def test_aux_gradient_reaches_router() -> None:
    model = build_tiny("qwen2_moe", coef=1.0)
    _, aux = forward.token_losses(model, batch_of(rows(3, (8, 5)), 8), "sdpa")
    aux.backward()
    router_grads = [p.grad for n, p in model.named_parameters() if n.endswith("mlp.gate.weight")]
    assert router_grads and all(g is not None and g.abs().sum() > 0 for g in router_grads)


def test_lora_on_fused_expert_weights_merges_exactly(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    peft = PeftSettings(method="lora", r=4, alpha=8, dropout=0.0,
                        target_parameters=["experts.gate_up_proj", "experts.down_proj"])
    model = build_tiny("mixtral", coef=0.02, peft=peft)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("experts" in n for n in trainable), trainable
    batch = batch_of(rows(4, (12, 9)), 12)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    token_loss, aux = forward.token_losses(model, batch, "sdpa")
    (token_loss.sum() / (batch["targets"] != -100).sum() + aux).backward()
    optimizer.step()
    out = save.save_pretrained_with_template(model, tiny_tokenizer(), "{{ messages }}", tmp_path / "final")
    merged = AutoModelForCausalLM.from_pretrained(str(merge_adapter(out, tmp_path / "merged", dtype="fp32"))).eval()
    model.eval()
    with torch.no_grad():
        trained = model(input_ids=batch["input_ids"][:1], use_cache=False).logits
        merged_logits = merged(input_ids=batch["input_ids"][:1], use_cache=False).logits
        with model.disable_adapter():
            base = model(input_ids=batch["input_ids"][:1], use_cache=False).logits
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(merged_logits, trained, rtol=0, atol=1e-4)


def test_aux_loss_under_gradient_checkpointing_matches() -> None:
    """Router logits recorded inside checkpointed layers still carry gradients (non-reentrant checkpointing)."""
    batch = batch_of(rows(5, (9, 6)), 9)
    results = []
    for checkpointing in (False, True):
        cfg = ModelConfig(init=MOE_INIT["mixtral"], tokenizer=str(tiny_tokenizer_dir()), dtype="fp32",
                          attn_implementation="sdpa", moe_aux_loss_coef=0.5, gradient_checkpointing=checkpointing)
        torch.manual_seed(0)
        model = build.build_model(cfg, PeftSettings(method="full"), vocab_size=len(tiny_tokenizer()))
        assert unwrap.hf_model(model).is_activation_checkpointing == checkpointing
        token_loss, aux = forward.token_losses(model, batch, "sdpa")
        (token_loss.sum() / (batch["targets"] != -100).sum() + aux).backward()
        router = [p.grad.clone() for n, p in model.named_parameters() if n.endswith("mlp.gate.weight")]
        results.append((aux.detach(), router))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
