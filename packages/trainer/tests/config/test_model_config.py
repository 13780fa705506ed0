"""`model:` / `peft:` config validation (errors name the key) and the auto resolutions of dtype and attention."""

from __future__ import annotations

import pytest
import torch
from mft_trainer.config import model as model_config
from mft_trainer.config.model import ModelConfig, PeftSettings
from mft_trainer.model import build
from pydantic import ValidationError

TINY = {"architecture": "llama", "hidden_size": 32, "num_hidden_layers": 1}


def error_of(cls: type, **kwargs: object) -> str:
    with pytest.raises(ValidationError) as info:
        cls(**kwargs)
    return str(info.value)


def test_path_xor_init() -> None:
    assert "exactly one of `path`" in error_of(ModelConfig)
    assert "exactly one of `path`" in error_of(ModelConfig, path="/models/x", init=TINY, tokenizer="/tok")
    assert ModelConfig(path="/models/x").tokenizer_path == "/models/x"
    assert ModelConfig(init=TINY, tokenizer="/tok").tokenizer_path == "/tok"


def test_init_needs_tokenizer_and_known_keys() -> None:
    assert "model.tokenizer: required with model.init" in error_of(ModelConfig, init=TINY)
    message = error_of(ModelConfig, init={**TINY, "hiden_size": 8}, tokenizer="/tok")
    assert "init.hiden_size" in message and "LlamaConfig" in message
    assert "init.vocab_size" in error_of(ModelConfig, init={**TINY, "vocab_size": 9}, tokenizer="/tok")
    assert "unknown architecture 'llamma'" in error_of(ModelConfig, init={"architecture": "llamma"}, tokenizer="/t")
    assert "extra_forbidden" in error_of(ModelConfig, path="/m", dtyp="bf16")


def test_family_aliases() -> None:
    assert ModelConfig(init={"architecture": "StarCoder", "hidden_size": 32}, tokenizer="/t").init.model_type == "gpt_bigcode"
    assert ModelConfig(init={"architecture": "deepseek"}, tokenizer="/t").init.model_type == "llama"
    assert ModelConfig(init={"architecture": "CodeLlama"}, tokenizer="/t").init.model_type == "llama"
    # attribute_map names (hidden_size -> n_embd for gpt_bigcode) are accepted
    config = build.build_init_config(ModelConfig(init={"architecture": "starcoder", "hidden_size": 48},
                                                    tokenizer="/t").init, vocab_size=100)
    assert config.n_embd == 48 and config.vocab_size == 100


def test_flash_attention_2_without_flash_attn_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_config, "flash_attn_available", lambda: (False, "flash-attn is not installed"))
    message = error_of(ModelConfig, path="/m", attn_implementation="flash_attention_2")
    assert "model.attn_implementation" in message and "flash-attn is not installed" in message


def test_attn_auto_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "flash_attn_available", lambda: (True, ""))
    assert build.resolve_attn_implementation("auto", "cuda") == "flash_attention_2"
    assert build.resolve_attn_implementation("auto", "cpu") == "sdpa"
    monkeypatch.setattr(build, "flash_attn_available", lambda: (False, "not installed"))
    assert build.resolve_attn_implementation("auto", "cuda") == "sdpa"
    assert build.resolve_attn_implementation("eager", "cpu") == "eager"
    with pytest.raises(ValueError, match="flash_attention_2 cannot run"):
        build.resolve_attn_implementation("flash_attention_2", "cpu")


def test_dtype_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build.resolve_dtype("fp32", "cpu") == torch.float32
    assert build.resolve_dtype("bf16", "cpu") == torch.bfloat16
    monkeypatch.setattr(build, "cpu_has_bf16", lambda: True)
    assert build.resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(build, "cpu_has_bf16", lambda: False)
    assert build.resolve_dtype("auto", "cpu") == torch.float32


def test_peft_settings() -> None:
    lora = PeftSettings()
    assert (lora.method, lora.r, lora.alpha, lora.dropout, lora.target_modules) == ("lora", 16, 32.0, 0.05, "all-linear")
    assert "peft.r: only used by lora/qlora" in error_of(PeftSettings, method="full", r=8)
    assert "target_modules: empty list" in error_of(PeftSettings, target_modules=[])
    assert "peft.dropout: must be 0" in error_of(PeftSettings, target_parameters=["experts.down_proj"])
    assert "extra_forbidden" in error_of(PeftSettings, rank=8)


def test_qlora_without_bitsandbytes_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_config, "bitsandbytes_available", lambda: (False, "bitsandbytes is not installed"))
    message = error_of(PeftSettings, method="qlora")
    assert "peft.method: qlora needs bitsandbytes" in message and "not installed" in message
    real = model_config.importlib.util.find_spec
    monkeypatch.undo()
    monkeypatch.setattr(model_config.importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    assert "bitsandbytes is not installed" in error_of(PeftSettings, method="qlora")
