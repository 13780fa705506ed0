"""QLoRA on this CPU (bitsandbytes 0.50 runs NF4 forward and backward here, docs/reference.md §7): a tiny
llama is quantised to NF4 with double quantisation, only the LoRA adapters train, the adapter saves with an
unquantised base beside it, and merging gives exactly base+adapter."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from mft_trainer.config.model import ModelConfig, PeftSettings
from mft_trainer.model import build, forward, save
from mft_trainer.model.merge import merge_adapter
from trainer_testkit import tiny_tokenizer, tiny_tokenizer_dir

bnb = pytest.importorskip("bitsandbytes")

INIT = dict(architecture="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_qlora_trains_saves_and_merges_on_cpu(dtype: str, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    cfg = ModelConfig(init=INIT, tokenizer=str(tiny_tokenizer_dir()), dtype=dtype, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = build.build_model(cfg, PeftSettings(method="qlora", r=4, alpha=8, dropout=0.0),
                                 vocab_size=len(tokenizer))
    quantised = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantised) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers; lm_head stays unquantised
    assert all(m.weight.quant_type == "nf4" and m.weight.quant_state.nested for m in quantised)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, len(tokenizer), (2, 32), generator=g)
    batch = {"input_ids": ids, "targets": torch.cat([ids[:, 1:], torch.full((2, 1), -100)], 1),
             "position_ids": torch.arange(32).repeat(2, 1), "segment_ids": torch.ones(2, 32, dtype=torch.long)}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses, times = [], []
    for _ in range(3):
        start = time.perf_counter()
        token_loss, _ = forward.token_losses(model, batch, "sdpa")
        loss = token_loss.sum() / (batch["targets"] != -100).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    print(f"qlora cpu {dtype}: losses {[round(x, 4) for x in losses]}, step seconds {[round(t, 3) for t in times]}")
    assert losses[-1] < losses[0]
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n

    out = save.save_pretrained_with_template(model, tokenizer, "{{ messages }}", tmp_path / "final")
    assert (out / save.BASE_MODEL_SUBDIR / "model.safetensors").is_file()
    merged_dir = merge_adapter(out, tmp_path / "merged", dtype="fp32")
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(out / save.BASE_MODEL_SUBDIR)).eval()
    reference = PeftModel.from_pretrained(base, str(out)).eval()
    model.eval()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids, use_cache=False).logits
        reference_logits = reference(input_ids=ids, use_cache=False).logits
        quantised_logits = model(input_ids=ids, use_cache=False).logits.float()
    torch.testing.assert_close(merged_logits, reference_logits, rtol=0, atol=1e-4)
    # NF4 rounding of a random tiny model: close to, but not equal to, the unquantised base + adapter.
    assert (quantised_logits - merged_logits).abs().max() < 0.5
