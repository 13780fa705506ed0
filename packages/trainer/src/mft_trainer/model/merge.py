"""`mft-train merge`: fold a LoRA adapter into its base and save a full Hugging Face model (Contract 2).

The base is loaded unquantised (even for a QLoRA adapter: merging into NF4 weights would re-quantise the update
away) in the dtype asked for, by default (`auto`) the dtype the base model's config.json records (fp32 when it
records none, as for the bases mft-train builds from `model.init`), the adapter applied and merged with peft's `merge_and_unload`, and the result
saved with the adapter directory's tokenizer (and therefore its training `chat_template`) and generation config.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mft_trainer.model.quiet import import_peft, quiet_load
from mft_trainer.model.save import BASE_MODEL_SUBDIR, save_pretrained_with_template

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_CHOICES = ("auto", *_DTYPES)
# Files of Contract 2 that describe the run rather than the weights; carried over unchanged.
_RUN_METADATA = ("mft_train.json",)


def resolve_base(adapter_dir: Path, base: str | Path | None) -> str:
    """The base model to merge into.

    In order: `base` if given; adapter_config.json's base_model_name_or_path, where a relative path is read
    relative to the adapter directory first (mft-train names an init-built base `base_model`, saved beside the
    adapter), then as given; the `base_model/` directory beside the adapter; else a hub id as named.
    """
    if base is not None:
        return str(base)
    config_path = adapter_dir / "adapter_config.json"
    if not adapter_dir.is_dir():
        raise ValueError(f"adapter: {adapter_dir} does not exist; expected a LoRA adapter folder (adapter_config.json)")
    if not config_path.is_file():
        if (adapter_dir / "config.json").is_file():
            raise ValueError(f"adapter: {config_path} not found: {adapter_dir} holds a full model (config.json), not "
                             "a LoRA adapter, so there is nothing to merge; use the folder as it is")
        raise ValueError(f"adapter: {config_path} not found: {adapter_dir} is not a LoRA adapter folder")
    named = json.loads(config_path.read_text()).get("base_model_name_or_path")
    if named and not Path(named).is_absolute() and (adapter_dir / named).is_dir():
        return str(adapter_dir / named)
    if named and Path(named).is_dir():
        return str(named)
    beside = adapter_dir / BASE_MODEL_SUBDIR
    if beside.is_dir():
        return str(beside)
    if named and not Path(named).is_absolute() and not named.startswith("."):
        return str(named)  # a hub id: let transformers resolve it (fails clearly when offline)
    raise ValueError(
        f"{config_path}: base_model_name_or_path {named!r} does not exist and there is no {BASE_MODEL_SUBDIR}/ "
        "beside the adapter; pass --base PATH"
    )


def base_dtype(base_path: str) -> str:
    """The dtype name (bf16, fp16, fp32) the base model's config records; fp32 when it records none."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_path)
    recorded = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(recorded, str):
        recorded = getattr(torch, recorded, None)
    return next((name for name, value in _DTYPES.items() if value == recorded), "fp32")


def merge_adapter(
    adapter_dir: str | Path, output_dir: str | Path, base: str | Path | None = None, dtype: str = "auto"
) -> Path:
    """Merge the LoRA adapter in `adapter_dir` into its base and save a full model to `output_dir`; return it.

    dtype: auto (the base's own), bf16, fp16 or fp32.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"merge: dtype {dtype!r}; expected one of {', '.join(DTYPE_CHOICES)}")
    adapter_dir = Path(adapter_dir)
    base_path = resolve_base(adapter_dir, base)
    if dtype == "auto":
        dtype = base_dtype(base_path)
    peft = import_peft()
    with quiet_load():
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=_DTYPES[dtype])
        model = peft.PeftModel.from_pretrained(model, str(adapter_dir))
    merged = model.merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    if not tokenizer.chat_template:
        raise ValueError(f"{adapter_dir}: the saved tokenizer has no chat_template; not a Contract 2 checkpoint")
    generation_path = adapter_dir / "generation_config.json"
    eos_token = None
    if generation_path.is_file():
        generation = GenerationConfig.from_pretrained(str(adapter_dir))
        eos_id = generation.eos_token_id
        eos_id = eos_id[0] if isinstance(eos_id, list) else eos_id
        if eos_id is not None:
            eos_token = tokenizer.convert_ids_to_tokens(int(eos_id))
        merged.generation_config = generation
    extra = {name: adapter_dir / name for name in _RUN_METADATA if (adapter_dir / name).is_file()}
    return save_pretrained_with_template(
        merged, tokenizer, tokenizer.chat_template, output_dir, eos_token=eos_token, extra_files=extra
    )
