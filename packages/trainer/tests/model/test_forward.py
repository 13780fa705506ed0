"""`modeling`: token_losses against transformers' own loss, gradient checkpointing and bf16 autocast equivalences,
the packing-isolation probe and refusal, full-model Contract 2 saving (atomic), loading from a path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mft_trainer.config.model import ModelConfig, PeftSettings
from mft_trainer.data import packing
from mft_trainer.model import attention, build, forward, save, unwrap
from trainer_testkit import tiny_tokenizer, tiny_tokenizer_dir

LLAMA = dict(architecture="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def build_tiny(method: str = "lora", *, init: dict | None = None, dtype: str = "fp32", attn: str = "sdpa",
          gradient_checkpointing: bool = False, seed: int = 0) -> torch.nn.Module:
    cfg = ModelConfig(init=init or LLAMA, tokenizer=str(tiny_tokenizer_dir()), dtype=dtype,
                      attn_implementation=attn, gradient_checkpointing=gradient_checkpointing)
    peft = PeftSettings(method=method, r=4, alpha=8, dropout=0.0) if method != "full" else PeftSettings(method="full")
    torch.manual_seed(seed)
    return build.build_model(cfg, peft, vocab_size=len(tiny_tokenizer()))


def packed_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two rows: [7-token sample | 5-token sample | 4 pads] and [11-token sample | 5 pads]."""
    g = torch.Generator().manual_seed(seed)
    vocab = len(tiny_tokenizer())
    rows = [[7, 5], [11]]
    out = {k: [] for k in ("input_ids", "targets", "position_ids", "segment_ids", "task_ids", "sample_ids")}
    sample = 0
    for lengths in rows:
        row = {k: [] for k in out}
        for seg, n in enumerate(lengths, start=1):
            ids = torch.randint(3, vocab, (n,), generator=g).tolist()
            row["input_ids"] += ids
            row["targets"] += ids[1:] + [-100]
            row["position_ids"] += list(range(n))
            row["segment_ids"] += [seg] * n
            row["task_ids"] += [seg - 1] * n
            row["sample_ids"] += [sample] * n
            sample += 1
        pad = 16 - len(row["input_ids"])
        for key, value in (("input_ids", 0), ("targets", -100), ("position_ids", 0), ("segment_ids", 0),
                           ("task_ids", -1), ("sample_ids", -1)):
            out[key].append(row[key] + [value] * pad)
    return {k: torch.tensor(v) for k, v in out.items()}


def test_token_losses_match_transformers_loss_on_a_plain_batch() -> None:
    model = build_tiny("full").eval()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, len(tiny_tokenizer()), (2, 12), generator=g)
    batch = {"input_ids": ids, "targets": torch.cat([ids[:, 1:], torch.full((2, 1), -100)], 1),
             "position_ids": torch.arange(12).repeat(2, 1), "segment_ids": torch.ones(2, 12, dtype=torch.long)}
    with torch.no_grad():
        token_loss, aux = forward.token_losses(model, batch, "sdpa")
        reference = model(input_ids=ids, labels=ids, use_cache=False).loss
    assert aux is None and token_loss.dtype == torch.float32
    assert bool((token_loss[:, -1] == 0).all())
    torch.testing.assert_close(token_loss.sum() / (batch["targets"] != -100).sum(), reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(method: str) -> None:
    batch = packed_batch()
    results = []
    for checkpointing in (False, True):
        model = build_tiny(method, gradient_checkpointing=checkpointing)
        assert unwrap.hf_model(model).is_activation_checkpointing == checkpointing
        token_loss, _ = forward.token_losses(model, batch, "sdpa")
        loss = token_loss.sum() / (batch["targets"] != -100).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-6)
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_on_cpu_tracks_fp32() -> None:
    batch = packed_batch()
    fp32_model = build_tiny("lora", dtype="fp32")
    bf16_model = build_tiny("lora", dtype="bf16")
    assert unwrap.hf_model(bf16_model).mft_autocast_dtype == torch.bfloat16
    assert unwrap.hf_model(fp32_model).mft_autocast_dtype is None
    assert all(p.dtype == torch.float32 for p in bf16_model.parameters())  # trainable weights stay fp32 on CPU
    with torch.no_grad():
        ref, _ = forward.token_losses(fp32_model, batch, "sdpa")
        low, _ = forward.token_losses(bf16_model, batch, "sdpa")
        exact, _ = forward.token_losses(bf16_model, batch, "sdpa", autocast_dtype=None)
    supervised = batch["targets"] != -100
    torch.testing.assert_close(exact, ref, rtol=0, atol=1e-6)
    relative = ((low - ref)[supervised].abs().max() / ref[supervised].abs().max()).item()
    assert 0 < relative < 2e-2, relative


def test_packing_probe_detects_contamination(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny("lora")
    assert forward.verify_packing_isolation(model, "sdpa") < 1e-5
    assert forward.verify_packing_isolation(model, "eager") < 1e-5
    # A mask that is causal but ignores segment boundaries (what position-id resets alone give): the probe sees it.
    def leaky(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        length = segment_ids.shape[1]
        allowed = torch.ones(length, length, dtype=torch.bool).tril()
        mask = torch.zeros(segment_ids.shape[0], 1, length, length, dtype=dtype)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)

    monkeypatch.setattr(packing, "block_causal_mask", leaky)
    assert forward.verify_packing_isolation(model, "eager") > attention.ISOLATION_TOLERANCE
    assert attention.set_packed_attention(model, "mask") == "mask"
    assert forward.verify_packing_isolation(model, "sdpa") > attention.ISOLATION_TOLERANCE
    # The segment-wise sdpa path (build_model's default for sdpa) given one span per row: the probe sees it too.
    monkeypatch.setattr(packing, "segment_spans", lambda seg: tuple((r, 0, seg.shape[1]) for r in range(seg.shape[0])))
    assert attention.set_packed_attention(model, "segments") == "segments"
    assert forward.verify_packing_isolation(model, "sdpa") > attention.ISOLATION_TOLERANCE


def test_packed_batches_refused_for_a_model_type_that_leaks() -> None:
    model = build_tiny("lora")
    hf = unwrap.hf_model(model)
    hf.config.model_type = "some_future_family"
    packed = packed_batch()
    padded = {k: v[1:] for k, v in packed.items()}  # the second row holds one segment: plain padding
    hf.mft_packing_isolation = {}
    with pytest.raises(ValueError, match="has not been checked for segment isolation with sdpa"):
        forward.token_losses(model, packed, "sdpa")
    hf.mft_packing_isolation = {"sdpa": 0.45}
    with pytest.raises(ValueError, match="does not isolate packed segments with sdpa"):
        forward.token_losses(model, packed, "sdpa")
    token_loss, _ = forward.token_losses(model, padded, "sdpa")
    assert torch.isfinite(token_loss).all()
    hf.mft_packing_isolation = {"sdpa": 1e-7}
    forward.token_losses(model, packed, "sdpa")


def test_unverified_family_is_probed_when_built() -> None:
    init = dict(architecture="qwen3", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    model = build_tiny("lora", init=init)
    hf = unwrap.hf_model(model)
    assert hf.config.model_type not in attention.PACKING_VERIFIED_MODEL_TYPES
    assert hf.mft_packing_isolation["sdpa"] < 1e-5
    token_loss, _ = forward.token_losses(model, packed_batch(), "sdpa")
    assert torch.isfinite(token_loss).all()


def test_full_model_contract2_save_and_reload(tmp_path: Path) -> None:
    from mft_trainer.data.template import TemplateConfig, to_chat_template
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = tiny_tokenizer()
    model = build_tiny("full")
    template = TemplateConfig()
    out = save.save_pretrained_with_template(model, tokenizer, template, tmp_path / "final")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    saved = AutoTokenizer.from_pretrained(str(out))
    assert saved.chat_template == to_chat_template(template)
    eos = tokenizer.eos_token_id
    assert GenerationConfig.from_pretrained(str(out)).eos_token_id == eos
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == eos
    reloaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ids = packed_batch()["input_ids"][:1]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids, use_cache=False).logits)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = tiny_tokenizer()
    model = build_tiny("lora")
    out = save.save_pretrained_with_template(model, tokenizer, "{{ messages }}", tmp_path / "final")
    before = sorted(p.name for p in out.iterdir())

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(tokenizer), "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save.save_pretrained_with_template(model, tokenizer, "{{ other }}", tmp_path / "final")
    with pytest.raises(RuntimeError, match="disk full"):
        save.save_pretrained_with_template(model, tokenizer, "{{ other }}", tmp_path / "fresh")
    assert sorted(p.name for p in out.iterdir()) == before  # the previous complete checkpoint is untouched
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_unknown_eos_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="EOS token '<nope>' is not in the tokenizer"):
        save.save_pretrained_with_template(build_tiny("full"), tiny_tokenizer(), "x", tmp_path / "o", eos_token="<nope>")


def test_load_from_path_and_vocabulary_checks(tmp_path: Path) -> None:
    base = build_tiny("full")
    base.save_pretrained(str(tmp_path / "base"))
    tiny_tokenizer().save_pretrained(str(tmp_path / "base"))
    cfg = ModelConfig(path=str(tmp_path / "base"), dtype="fp32", attn_implementation="eager")
    tokenizer = build.load_tokenizer(cfg)
    assert tokenizer.pad_token is not None and tokenizer.eos_token == "<|endoftext|>"
    model = build.build_model(cfg, PeftSettings(r=4, alpha=8), vocab_size=len(tokenizer))
    assert model.peft_config["default"].base_model_name_or_path == str(tmp_path / "base")
    assert unwrap.hf_model(model).config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="a frozen \\(lora/qlora\\) base cannot learn new embeddings"):
        build.build_model(cfg, PeftSettings(r=4, alpha=8), vocab_size=len(tokenizer) + 10)
    full = build.build_model(cfg, PeftSettings(method="full"), vocab_size=len(tokenizer) + 10)
    assert full.get_input_embeddings().weight.shape[0] == len(tokenizer) + 10
    with pytest.raises(ValueError, match="model.path: cannot load a causal LM"):
        build.build_model(ModelConfig(path=str(tmp_path / "missing"), tokenizer=str(tmp_path / "base")),
                             PeftSettings(), vocab_size=10)
    with pytest.raises(ValueError, match="model.tokenizer: cannot load a tokenizer"):
        build.load_tokenizer(ModelConfig(init=LLAMA, tokenizer=str(tmp_path / "missing")))
