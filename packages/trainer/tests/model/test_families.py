"""Every model family the trainer names: build a tiny model from its transformers config class, then

1. packed-batch `token_losses` == the same samples run one per row (sdpa and eager), i.e. the 4-D block mask
   isolates packed segments in this family, and the MoE aux loss ignores padding;
2. one LoRA optimizer step through `token_losses` changes only the adapter;
3. `save_pretrained_with_template` writes Contract 2, `merge_adapter` folds the adapter in, and the reloaded
   merged model's logits equal base+adapter logits (and differ from the base alone).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mft_trainer.config.model import ModelConfig, PeftSettings
from mft_trainer.model import build, forward, save
from mft_trainer.model.adapters import trainable_parameter_count
from mft_trainer.model.merge import merge_adapter, resolve_base
from trainer_testkit import FAMILIES, MOE, pack, random_samples, stack, tiny_tokenizer, tiny_tokenizer_dir

# Every family stays in the default run: at this size each parametrisation takes about 0.2 s.


def build_tiny(family: str, attn: str, method: str = "lora", seed: int = 0) -> torch.nn.Module:
    model_cfg = ModelConfig(init=FAMILIES[family], tokenizer=str(tiny_tokenizer_dir()), dtype="fp32",
                            attn_implementation=attn, moe_aux_loss_coef=0.02)
    peft_cfg = PeftSettings(method=method, r=4, alpha=8, dropout=0.0) if method != "full" else PeftSettings(method=method)
    torch.manual_seed(seed)
    return build.build_model(model_cfg, peft_cfg, vocab_size=len(tiny_tokenizer()), device="cpu")


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_token_losses_equal_per_sample_losses(family: str, attn: str) -> None:
    model = build_tiny(family, attn).eval()
    samples = random_samples(len(tiny_tokenizer()), (7, 5, 9), seed=1)
    packed = stack([pack(samples, 24), pack(samples[::-1], 24)])  # two rows, different segment order
    with torch.no_grad():
        packed_loss, packed_aux = forward.token_losses(model, packed, attn)
        # Reference: each sample alone, through the plain transformers forward (no mask, no position ids).
        alone_loss = [
            torch.nn.functional.cross_entropy(model(input_ids=torch.tensor([s]), use_cache=False).logits[0, :-1],
                                              torch.tensor(s[1:]), reduction="none")
            for s in samples
        ]
    assert packed_loss.dtype == torch.float32 and packed_loss.shape == (2, 24)
    assert bool((packed_loss[packed["targets"] == -100] == 0).all())
    start, worst = 0, 0.0
    for i, s in enumerate(samples):
        n = len(s)
        torch.testing.assert_close(packed_loss[0, start:start + n - 1], alone_loss[i], rtol=0, atol=2e-5)
        worst = max(worst, (packed_loss[0, start:start + n - 1] - alone_loss[i]).abs().max().item())
        start += n
    print(f"{family}/{attn}: packed vs per-sample max |token loss diff| {worst:.2e}")
    assert (packed_aux is not None) == (family in MOE)
    if family in MOE:
        # Padding-aware: the same real tokens plus padding give the same aux loss.
        one = pack(samples[:2], 12)
        padded = pack(samples[:2], 24)
        with torch.no_grad():
            _, aux_one = forward.token_losses(model, one, attn)
            _, aux_padded = forward.token_losses(model, padded, attn)
        torch.testing.assert_close(aux_padded, aux_one, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lm_head_on_supervised_positions_only_changes_nothing(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits computed only where targets are supervised give the same losses and gradients as full logits."""
    samples = random_samples(len(tiny_tokenizer()), (9, 7, 10), seed=3)
    batch = stack([pack(samples[:2], 20), pack(samples[2:], 20)])
    targets = batch["targets"].clone()
    targets[:, ::3] = -100  # prompt-like unsupervised positions in every row, at different places
    targets[1, :4] = -100
    batch["targets"] = targets
    keep = targets != -100
    assert 0 < int(keep.sum()) < 0.9 * keep.numel()

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor], list[int]]:
        model = build_tiny(family, "sdpa", method="full")
        head = model.get_output_embeddings()
        widths: list[int] = []
        handle = head.register_forward_hook(lambda m, a, out: widths.append(int(out.reshape(-1, out.shape[-1]).shape[0])))
        token_loss, aux = forward.token_losses(model, batch, "sdpa")
        handle.remove()
        (token_loss.sum() / keep.sum() + (aux if aux is not None else 0.0)).backward()
        return token_loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, widths

    selected, selected_grads, selected_widths = run()
    monkeypatch.setattr(forward, "_SELECT_LOGITS_BELOW", 0.0)  # never select: full [B, L, V] logits
    full, full_grads, full_widths = run()
    assert selected_widths == [int(keep.sum())] and full_widths == [keep.numel()]
    assert bool((selected[~keep] == 0).all())
    torch.testing.assert_close(selected, full, rtol=0, atol=2e-6)
    assert selected_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(selected_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lora_step_save_merge_reload(family: str, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = tiny_tokenizer()
    model = build_tiny(family, "sdpa")
    base_params = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert lora_params and all("lora_" in n for n in lora_params)
    assert not any("lm_head" in n or "embed" in n for n in lora_params)
    trainable, total = trainable_parameter_count(model)
    assert trainable == sum(p.numel() for p in lora_params.values()) and 0 < trainable < total

    samples = random_samples(len(tokenizer), (9, 6, 8), seed=2)
    batch = stack([pack(samples[:2], 16), pack(samples[2:], 16)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    token_loss, aux = forward.token_losses(model, batch, "sdpa")
    loss = token_loss.sum() / (batch["targets"] != -100).sum() + (aux if aux is not None else 0.0)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    for n, p in model.named_parameters():
        if n in base_params:
            assert torch.equal(p, base_params[n]), n
    assert any(not torch.equal(p, lora_params[n]) for n, p in model.named_parameters() if n in lora_params)

    chat_template = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    out = save.save_pretrained_with_template(model, tokenizer, chat_template, tmp_path / "final")
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == save.BASE_MODEL_SUBDIR  # relative to the adapter
    assert resolve_base(out, None) == str(out / save.BASE_MODEL_SUBDIR)
    assert (out / "adapter_model.safetensors").is_file()
    saved_tok = AutoTokenizer.from_pretrained(str(out))
    assert saved_tok.chat_template == chat_template
    assert GenerationConfig.from_pretrained(str(out)).eos_token_id == tokenizer.eos_token_id

    merged_dir = merge_adapter(out, tmp_path / "merged", dtype="fp32")
    assert (merged_dir / "model.safetensors").is_file() and not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), attn_implementation="sdpa").eval()
    reloaded_base = AutoModelForCausalLM.from_pretrained(resolve_base(out, None)).eval()
    reloaded = PeftModel.from_pretrained(reloaded_base, str(out)).eval()
    model.eval()
    ids = torch.tensor([samples[0] + samples[1]])
    with torch.no_grad():
        trained = model(input_ids=ids, use_cache=False).logits
        merged_logits = merged(input_ids=ids, use_cache=False).logits
        reloaded_logits = reloaded(input_ids=ids, use_cache=False).logits
        with model.disable_adapter():
            base_logits = model(input_ids=ids, use_cache=False).logits
    diff = (merged_logits - trained).abs().max().item()
    print(f"{family}: merged vs base+adapter max |logit diff| {diff:.2e}; "
          f"adapter effect {(trained - base_logits).abs().max().item():.2e}")
    assert diff < 1e-4
    torch.testing.assert_close(reloaded_logits, trained, rtol=0, atol=1e-5)
    assert (trained - base_logits).abs().max() > 1e-3  # the adapter really changed the model
    assert AutoTokenizer.from_pretrained(str(merged_dir)).chat_template == chat_template
    assert GenerationConfig.from_pretrained(str(merged_dir)).eos_token_id == tokenizer.eos_token_id
