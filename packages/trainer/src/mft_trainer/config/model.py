"""The `model:` and `peft:` sections of the mft-train config (pydantic, validated before any model is loaded).

Everything that can be decided without loading weights is checked here, so a wrong combination fails in a
second with the key named instead of after minutes of loading: `path` XOR `init`, an unknown `init` key for the
chosen architecture, flash_attention_2 without flash-attn or CUDA, torch_varlen without CUDA or in fp32, qlora
without bitsandbytes, LoRA-only keys given to a full fine-tune.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mft_trainer.config.base import Section

# Names people use for a family, mapped to the transformers `model_type` whose config class builds it.
# CodeLlama and DeepSeek-Coder are Llama-shaped (LlamaForCausalLM); StarCoder (1) is GPTBigCode.
ARCHITECTURE_ALIASES: dict[str, str] = {
    "codellama": "llama",
    "deepseek": "llama",
    "deepseek_coder": "llama",
    "starcoder": "gpt_bigcode",
    "starcoderbase": "gpt_bigcode",
}


def resolve_architecture(name: str) -> str:
    """The transformers `model_type` for an `init.architecture` name (aliases resolved, lower-cased)."""
    key = name.strip().lower().replace("-", "_")
    return ARCHITECTURE_ALIASES.get(key, key)


def flash_attn_available() -> tuple[bool, str]:
    """Whether flash_attention_2 can run here, and if not, why (for error messages)."""
    if importlib.util.find_spec("flash_attn") is None:
        return False, "the flash-attn package is not installed (pip install 'mft-trainer[gpu]')"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device is available (flash-attn kernels run on NVIDIA GPUs only)"
    return True, ""


def torch_varlen_available() -> tuple[bool, str]:
    """Whether torch's varlen attention (`torch.nn.attention.varlen`) can run here, and if not, why."""
    from mft_trainer.model.native_attention import varlen_available

    return varlen_available()


def bitsandbytes_available() -> tuple[bool, str]:
    """Whether bitsandbytes 4-bit (NF4) quantisation can be used, and if not, why."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed (pip install 'mft-trainer[qlora]')"
    return True, ""


class ModelInit(BaseModel):
    """A model built from a transformers config class instead of loaded: `{architecture: llama, hidden_size: 64, ...}`.

    Every key besides `architecture` is passed to the architecture's config class and must be one of its
    attributes (a typo would otherwise be silently stored and ignored by transformers). `vocab_size` comes from
    the tokenizer and must not be given here.
    """

    model_config = ConfigDict(extra="allow")

    architecture: str

    @model_validator(mode="after")
    def _check_keys(self) -> ModelInit:
        from transformers import CONFIG_MAPPING

        model_type = resolve_architecture(self.architecture)
        if model_type not in CONFIG_MAPPING:
            known = ", ".join(sorted(set(ARCHITECTURE_ALIASES) | {"llama", "mistral", "mixtral", "qwen2",
                                                                   "qwen2_moe", "gpt_bigcode", "starcoder2",
                                                                   "gpt_neox", "phi", "gemma"}))
            raise ValueError(
                f"init.architecture: unknown architecture {self.architecture!r}; expected a transformers "
                f"model_type such as {known}"
            )
        defaults = CONFIG_MAPPING[model_type]()
        for key in self.config_kwargs():
            if key == "vocab_size":
                raise ValueError("init.vocab_size: do not set it; it is taken from the tokenizer")
            if not hasattr(defaults, key):
                raise ValueError(
                    f"init.{key}: not a parameter of {type(defaults).__name__} "
                    f"(architecture {self.architecture!r})"
                )
        return self

    @property
    def model_type(self) -> str:
        return resolve_architecture(self.architecture)

    def config_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for the config class (everything except `architecture`)."""
        return dict(self.model_extra or {})


class ModelConfig(Section):
    """The `model:` section."""


    path: str | None = Field(default=None, description="Any AutoModelForCausalLM directory (or hub id).")
    init: ModelInit | None = Field(default=None, description="Build a fresh model from a config class instead.")
    tokenizer: str | None = Field(default=None, description="Tokenizer directory; defaults to `path`.")
    dtype: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="Compute precision. auto = bf16 where the hardware has it (CUDA bf16, or a CPU with "
        "AVX512-BF16/AMX), else fp32. bf16 runs under torch.autocast with fp32 trainable weights; on CUDA the "
        "frozen base of a LoRA/QLoRA model is also stored in bf16.",
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flex_attention", "torch_varlen"] = Field(
        default="auto",
        description="How packed samples are kept apart. auto = flash_attention_2 when flash-attn is installed and "
        "CUDA is used; else torch_varlen (torch's own flash kernels over cu_seqlens; CUDA, sm80+, bf16/fp16) on "
        "CUDA; else sdpa (segment-wise or the 4-D mask). flex_attention = torch's flex attention with a block "
        "mask (compiled; trains on CUDA; CPU forwards only, torch 2.13 has no CPU backward).",
    )
    gradient_checkpointing: bool = False
    moe_aux_loss_coef: float | None = Field(
        default=None,
        ge=0.0,
        description="Weight of the MoE router load-balancing loss; None keeps the model config's own "
        "router_aux_loss_coef; 0 disables it.",
    )
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if (self.path is None) == (self.init is None):
            raise ValueError("model: give exactly one of `path` (load a model) or `init` (build one from a config)")
        if self.init is not None and self.tokenizer is None:
            raise ValueError("model.tokenizer: required with model.init (there is no model directory to take it from)")
        if self.attn_implementation == "flash_attention_2":
            ok, why = flash_attn_available()
            if not ok:
                raise ValueError(f"model.attn_implementation: flash_attention_2 cannot be used: {why}; "
                                 "use auto, sdpa or eager")
        if self.attn_implementation == "torch_varlen":
            ok, why = torch_varlen_available()
            if not ok:
                raise ValueError(f"model.attn_implementation: torch_varlen cannot be used: {why}; "
                                 "use auto, sdpa or eager")
            if self.dtype == "fp32":
                raise ValueError("model.attn_implementation: torch_varlen runs flash kernels in bf16/fp16 only, "
                                 "but model.dtype is fp32; use model.dtype auto or bf16")
        return self

    @property
    def tokenizer_path(self) -> str:
        tok = self.tokenizer or self.path
        assert tok is not None  # guaranteed by the validator
        return tok


_LORA_ONLY_KEYS = ("r", "alpha", "dropout", "target_modules", "target_parameters")


class PeftSettings(Section):
    """The `peft:` section: lora, qlora (NF4 base + LoRA) or full fine-tuning."""


    method: Literal["lora", "qlora", "full"] = "lora"
    r: int = Field(default=16, ge=1)
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: Literal["all-linear"] | list[str] = Field(
        default="all-linear",
        description="Module names to adapt; all-linear = every nn.Linear (and bitsandbytes Linear4bit) "
        "except the output head.",
    )
    target_parameters: list[str] = Field(
        default_factory=list,
        description="Parameter names to adapt directly, e.g. [experts.gate_up_proj, experts.down_proj] for the "
        "fused 3-D expert weights of transformers-5 MoE models (not nn.Linear, so all-linear skips them). "
        "Needs dropout 0.",
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("peft.target_modules: empty list; use all-linear or name at least one module")
        return value

    @model_validator(mode="after")
    def _check(self) -> PeftSettings:
        if self.method == "full":
            given = [k for k in _LORA_ONLY_KEYS if k in self.model_fields_set]
            if given:
                raise ValueError(f"peft.{given[0]}: only used by lora/qlora, but peft.method is full")
        if self.method == "qlora":
            ok, why = bitsandbytes_available()
            if not ok:
                raise ValueError(f"peft.method: qlora needs bitsandbytes 4-bit quantisation: {why}")
        if self.target_parameters and self.dropout > 0:
            raise ValueError(
                "peft.dropout: must be 0 with peft.target_parameters (peft applies LoRA to a raw parameter "
                "without an input to drop out)"
            )
        return self
