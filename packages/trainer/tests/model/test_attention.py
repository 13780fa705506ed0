"""Segment-wise causal sdpa for packed rows (attention.SEGMENT_SDPA) gives the 4-D block mask's losses and gradients.

For every family the trainer names (all of PACKING_VERIFIED_MODEL_TYPES): build_model picks the segment path for
sdpa, and per-token losses AND parameter gradients equal the 4-D mask path on rows with several segments, padding
and one full segment; with gradient checkpointing and under bf16 autocast too (llama, qwen2). Without spans the
function is transformers' sdpa, a model whose layers drop the spans is refused, and no custom name is saved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mft_trainer.config.model import ModelConfig, PeftSettings
from mft_trainer.data.packing import segment_spans
from mft_trainer.model import attention, build, forward, save, unwrap
from trainer_testkit import FAMILIES, pack, random_samples, stack, tiny_tokenizer, tiny_tokenizer_dir


@pytest.fixture(autouse=True)
def _always_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """token_losses takes the segment path only where it pays; these tests compare the two paths on every batch."""
    monkeypatch.setattr(attention, "SEGMENT_COST_SCALE", 0.0)


def build_tiny(family: str, *, dtype: str = "fp32", checkpointing: bool = False) -> torch.nn.Module:
    cfg = ModelConfig(init=FAMILIES[family], tokenizer=str(tiny_tokenizer_dir()), dtype=dtype,
                      attn_implementation="sdpa", gradient_checkpointing=checkpointing, moe_aux_loss_coef=0.02)
    torch.manual_seed(0)
    return build.build_model(cfg, PeftSettings(method="full"), vocab_size=len(tiny_tokenizer()), device="cpu")


def mixed_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Rows: three segments + padding, the same reversed, one segment filling the row, two segments filling it."""
    vocab = len(tiny_tokenizer())
    s = random_samples(vocab, (7, 5, 9, 24, 10, 14), seed=seed)
    return stack([pack(s[:3], 24), pack(s[:3][::-1], 24), pack([s[3]], 24), pack(s[4:], 24)])


def losses_and_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    token_loss, aux = forward.token_losses(model, batch, "sdpa")
    total = token_loss.sum() + (aux if aux is not None else 0.0)
    total.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return token_loss.detach(), grads


def test_segment_spans_golden() -> None:
    seg = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0],
                        [1, 0, 0, 2, 2, 2]])
    assert segment_spans(seg) == ((0, 0, 3), (0, 3, 6), (1, 0, 6), (2, 0, 6), (3, 0, 6),
                                  (4, 0, 1), (4, 1, 3), (4, 3, 6))
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        segment_spans(torch.ones(6, dtype=torch.long))


def test_segment_attention_pays_by_the_cost_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention, "SEGMENT_COST_SCALE", 1.0)
    pays = attention.segment_attention_pays
    assert pays(((0, 0, 8), (1, 0, 8)), 2, 8)  # one full segment per row: a single causal call, no mask
    assert not pays(((0, 0, 6), (0, 6, 8), (1, 0, 8)), 2, 8)  # 3 calls of 50k pairs each vs 2 * 64 pairs
    # seq 512, 6 rows of 4 segments of 128 tokens (the CPU demo's shape): per span 50000 + 800 * 128 + 128^2 / 2 =
    # 160592, x 24 = 3854208 > 6 * 512^2 = 1572864: the mask
    demo = tuple((row, start, start + 128) for row in range(6) for start in range(0, 512, 128))
    assert not pays(demo, 6, 512)
    # seq 2048, 2 rows of 4 segments of 512: per span 50000 + 409600 + 131072 = 590672, x 8 = 4725376 <= 2 * 2048^2
    long_rows = tuple((row, start, start + 512) for row in range(2) for start in range(0, 2048, 512))
    assert pays(long_rows, 2, 2048)
    monkeypatch.setattr(attention, "SEGMENT_COST_SCALE", 0.0)
    assert pays(demo, 6, 512)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_segment_path_equals_mask_path(family: str) -> None:
    model = build_tiny(family)
    hf = unwrap.hf_model(model)
    assert hf.config.model_type in attention.PACKING_VERIFIED_MODEL_TYPES
    assert attention.uses_segment_attention(hf), "build_model should pick segment attention for sdpa"
    model.eval()  # no dropout, so the two paths see identical computations
    batch = mixed_batch()
    seg_loss, seg_grads = losses_and_grads(model, batch)
    assert attention.set_packed_attention(model, "mask") == "mask" and not attention.uses_segment_attention(hf)
    mask_loss, mask_grads = losses_and_grads(model, batch)
    assert attention.set_packed_attention(model, "segments") == "segments"
    supervised = batch["targets"] != -100
    assert bool((seg_loss[~supervised] == 0).all())
    torch.testing.assert_close(seg_loss[supervised], mask_loss[supervised], rtol=0, atol=2e-5)
    assert seg_grads.keys() == mask_grads.keys()
    for name, grad in seg_grads.items():
        torch.testing.assert_close(grad, mask_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    print(f"{family}: segments vs mask max |token loss diff| "
          f"{(seg_loss - mask_loss)[supervised].abs().max().item():.2e}")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_segment_path_with_checkpointing_and_bf16(family: str) -> None:
    batch = mixed_batch(seed=3)
    supervised = batch["targets"] != -100
    model = build_tiny(family, checkpointing=True).eval()
    seg_loss, seg_grads = losses_and_grads(model, batch)
    attention.set_packed_attention(model, "mask")
    mask_loss, mask_grads = losses_and_grads(model, batch)
    torch.testing.assert_close(seg_loss[supervised], mask_loss[supervised], rtol=0, atol=2e-5)
    for name, grad in seg_grads.items():
        torch.testing.assert_close(grad, mask_grads[name], rtol=1e-4, atol=1e-5, msg=name)

    model = build_tiny(family, dtype="bf16").eval()
    with torch.no_grad():
        seg_bf16, _ = forward.token_losses(model, batch, "sdpa", autocast_dtype=torch.bfloat16)
        attention.set_packed_attention(model, "mask")
        mask_bf16, _ = forward.token_losses(model, batch, "sdpa", autocast_dtype=torch.bfloat16)
    # bf16 rounding differs between the two kernels; a leak between segments moves losses by ~0.5.
    assert (seg_bf16 - mask_bf16)[supervised].abs().max().item() < 5e-2


def test_without_spans_it_is_transformers_sdpa() -> None:
    """Direct calls (generation, a 2-D padding mask) give exactly what attn_implementation='sdpa' gives."""
    model = build_tiny("llama").eval()
    ids = torch.randint(3, len(tiny_tokenizer()), (2, 10), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, :3] = 0  # left padding
    with torch.no_grad():
        seg = model(input_ids=ids, attention_mask=attention_mask).logits
        attention.set_packed_attention(model, "mask")
        assert unwrap.hf_model(model).config._attn_implementation == "sdpa"
        ref = model(input_ids=ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(seg, ref, rtol=0, atol=1e-6)


def test_a_forward_that_drops_the_spans_is_refused() -> None:
    model = build_tiny("llama")
    attn_module = unwrap.hf_model(model).model.layers[0].self_attn
    q = torch.zeros(1, 4, 6, 8)
    kv = torch.zeros(1, 2, 6, 8)
    attention._SEGMENT_STATE.expected = True
    try:
        with pytest.raises(RuntimeError, match="did not pass mft_segment_spans"):
            attention.segment_sdpa_attention(attn_module, q, kv, kv, None)
    finally:
        attention._SEGMENT_STATE.expected = False
    with pytest.raises(ValueError, match="cover 5 of 6"):
        attention.segment_sdpa_attention(attn_module, q, kv, kv, None, mft_segment_spans=((0, 0, 2), (0, 3, 6)))


def test_saved_config_names_no_custom_attention(tmp_path: Path) -> None:
    model = build_tiny("llama")
    assert attention.uses_segment_attention(unwrap.hf_model(model))
    template = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    out = save.save_pretrained_with_template(model, tiny_tokenizer(), template, tmp_path / "final")
    assert attention.SEGMENT_SDPA not in json.dumps(json.loads((out / "config.json").read_text()))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_position_ids_isolate_only_without_an_attention_mask(attn: str) -> None:
    """What TRL's packed rows rely on (docs/reference.md §7): transformers derives per-segment attention from
    restarting position ids only when the call has no attention mask; any mask, even all ones, turns it off."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation=attn)
    model = LlamaForCausalLM(config).eval()
    a, b = torch.randint(0, 100, (1, 6)), torch.randint(0, 100, (1, 5))
    ids = torch.cat([a, b], dim=1)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]])
    with torch.no_grad():
        separate = torch.cat([model(input_ids=a).logits, model(input_ids=b).logits], dim=1)
        no_mask = model(input_ids=ids, position_ids=positions, use_cache=False).logits
        ones = model(input_ids=ids, position_ids=positions, attention_mask=torch.ones_like(ids), use_cache=False).logits
    assert (no_mask - separate).abs().max() < 1e-5
    assert (ones - separate).abs().max() > 0.05
