"""merge_adapter: base resolution (given, adapter_config, base_model/ beside), bf16/fp16/fp32 outputs and the default
(the base's own dtype), run metadata carried over, clear errors (a full model given as the adapter)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from mft_trainer.config.model import ModelConfig, PeftSettings
from mft_trainer.model import build, forward, save
from mft_trainer.model.merge import merge_adapter, resolve_base
from trainer_testkit import tiny_tokenizer, tiny_tokenizer_dir

LLAMA = dict(architecture="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2)
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"


def trained_adapter(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A path-loaded base with a LoRA adapter trained one step, saved as Contract 2 at tmp_path/adapter."""
    torch.manual_seed(0)
    base_cfg = ModelConfig(init=LLAMA, tokenizer=str(tiny_tokenizer_dir()), dtype="fp32")
    base = build.build_model(base_cfg, PeftSettings(method="full"), vocab_size=len(tiny_tokenizer()))
    base.save_pretrained(str(tmp_path / "base"))
    cfg = ModelConfig(path=str(tmp_path / "base"), tokenizer=str(tiny_tokenizer_dir()), dtype="fp32")
    model = build.build_model(cfg, PeftSettings(r=4, alpha=8, dropout=0.0), vocab_size=len(tiny_tokenizer()))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    ids = torch.randint(3, len(tiny_tokenizer()), (2, 10), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "targets": torch.cat([ids[:, 1:], torch.full((2, 1), -100)], 1),
             "position_ids": torch.arange(10).repeat(2, 1), "segment_ids": torch.ones(2, 10, dtype=torch.long)}
    token_loss, _ = forward.token_losses(model, batch, "sdpa")
    token_loss.mean().backward()
    optimizer.step()
    meta = tmp_path / "mft_train.json"
    meta.write_text(json.dumps({"step": 1}))
    out = save.save_pretrained_with_template(model, tiny_tokenizer(), TEMPLATE, tmp_path / "adapter",
                                                 extra_files={"mft_train.json": meta})
    return model.eval(), out


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits.float()


def test_merge_path_base_in_fp32_and_bf16(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, adapter = trained_adapter(tmp_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tmp_path / "base")
    assert not (adapter / save.BASE_MODEL_SUBDIR).exists()  # a real base is named, not copied
    ids = torch.randint(3, len(tiny_tokenizer()), (1, 12), generator=torch.Generator().manual_seed(2))
    expected = logits(model, ids)

    fp32 = merge_adapter(adapter, tmp_path / "merged32", dtype="fp32")
    merged32 = AutoModelForCausalLM.from_pretrained(str(fp32)).eval()
    torch.testing.assert_close(logits(merged32, ids), expected, rtol=0, atol=1e-5)
    assert json.loads((fp32 / "mft_train.json").read_text()) == {"step": 1}
    assert AutoTokenizer.from_pretrained(str(fp32)).chat_template == TEMPLATE

    bf16 = merge_adapter(adapter, tmp_path / "merged16", dtype="bf16")
    merged16 = AutoModelForCausalLM.from_pretrained(str(bf16), dtype="auto").eval()
    assert merged16.model.embed_tokens.weight.dtype == torch.bfloat16
    relative = (logits(merged16, ids) - expected).abs().max() / expected.abs().max()
    assert relative < 3e-2


def test_base_resolution_and_errors(tmp_path: Path) -> None:
    _, adapter = trained_adapter(tmp_path)
    assert resolve_base(adapter, None) == str(tmp_path / "base")
    assert resolve_base(adapter, tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
    moved = tmp_path / "moved-base"
    shutil.move(str(tmp_path / "base"), moved)
    with pytest.raises(ValueError, match="does not exist and there is no base_model/"):
        merge_adapter(adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    out = merge_adapter(adapter, tmp_path / "merged", base=moved, dtype="fp32")
    assert (out / "model.safetensors").is_file()
    # A base saved beside the adapter (how init-built bases travel) is found when the named path is gone.
    shutil.copytree(moved, adapter / save.BASE_MODEL_SUBDIR)
    assert resolve_base(adapter, None) == str(adapter / save.BASE_MODEL_SUBDIR)
    with pytest.raises(ValueError, match="holds a full model .*nothing to merge"):
        merge_adapter(out, tmp_path / "again")
    with pytest.raises(ValueError, match="does not exist"):
        merge_adapter(tmp_path / "nowhere", tmp_path / "again")
    with pytest.raises(ValueError, match="dtype 'int8'; expected one of auto, bf16, fp16, fp32"):
        merge_adapter(adapter, tmp_path / "again", dtype="int8")


def test_merge_dtype_defaults_to_the_bases_own(tmp_path: Path) -> None:
    from mft_trainer.model.merge import base_dtype
    from transformers import AutoModelForCausalLM

    _, adapter = trained_adapter(tmp_path)
    assert base_dtype(str(tmp_path / "base")) == "fp32"  # built in fp32 and saved so
    auto = AutoModelForCausalLM.from_pretrained(str(merge_adapter(adapter, tmp_path / "auto")), dtype="auto")
    assert auto.model.embed_tokens.weight.dtype == torch.float32
    half = merge_adapter(adapter, tmp_path / "fp16", dtype="fp16")
    assert json.loads((half / "config.json").read_text())["dtype"] == "float16"
    # A base stored in bf16 merges to bf16 when no dtype is asked for.
    base16 = AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"), dtype=torch.bfloat16)
    base16.save_pretrained(str(tmp_path / "base16"))
    assert base_dtype(str(tmp_path / "base16")) == "bf16"
    merged = AutoModelForCausalLM.from_pretrained(
        str(merge_adapter(adapter, tmp_path / "merged16", base=tmp_path / "base16")), dtype="auto")
    assert merged.model.embed_tokens.weight.dtype == torch.bfloat16


def test_init_base_adapter_survives_being_moved(tmp_path: Path) -> None:
    """Callers save to a temp dir and rename it (and users move run dirs): the base is found beside the adapter."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = ModelConfig(init=LLAMA, tokenizer=str(tiny_tokenizer_dir()), dtype="fp32")
    model = build.build_model(cfg, PeftSettings(r=4, alpha=8, dropout=0.0), vocab_size=len(tiny_tokenizer()))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a non-trivial adapter without a training step
    saved = save.save_pretrained_with_template(model, tiny_tokenizer(), TEMPLATE, tmp_path / ".tmp-final")
    moved = tmp_path / "run" / "final"
    moved.parent.mkdir()
    saved.rename(moved)
    merged = AutoModelForCausalLM.from_pretrained(str(merge_adapter(moved, tmp_path / "merged", dtype="fp32")))
    ids = torch.randint(3, len(tiny_tokenizer()), (1, 9), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(logits(merged.eval(), ids), logits(model.eval(), ids), rtol=0, atol=1e-5)
