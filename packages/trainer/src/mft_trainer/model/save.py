"""Save Contract 2: weights or adapter, the tokenizer with the training chat template, the generation config's EOS."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mft_trainer.atomic import atomic_directory
from mft_trainer.data.template import to_chat_template
from mft_trainer.model.build import _INIT_BASES
from mft_trainer.model.quiet import quiet_save
from mft_trainer.model.unwrap import hf_model, unwrap_model

BASE_MODEL_SUBDIR = "base_model"


def _chat_template_string(template: Any, tokenizer: Any) -> str:
    if isinstance(template, str):
        return template
    return to_chat_template(template, tokenizer)


def _generation_config(hf: nn.Module, tokenizer: Any, eos_id: int) -> Any:
    from transformers import GenerationConfig

    existing = getattr(hf, "generation_config", None)
    gen = copy.deepcopy(existing) if existing is not None else GenerationConfig.from_model_config(hf.config)
    gen.eos_token_id = eos_id
    gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    gen.bos_token_id = tokenizer.bos_token_id
    return gen


def save_pretrained_with_template(
    model: nn.Module,
    tokenizer: Any,
    template: Any,
    out_dir: str | Path,
    *,
    eos_token: str | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    extra_files: Mapping[str, str | Path] | None = None,
) -> Path:
    """Write Contract 2 to `out_dir` atomically (temp sibling, then rename) and return it.

    - full model: `model.safetensors` + `config.json`; LoRA/QLoRA: `adapter_model.safetensors` +
      `adapter_config.json` naming the base. A base built from `model.init` (no directory of its own) is copied
      into `out_dir/base_model/` and named `base_model`, a path relative to the adapter directory.
    - the tokenizer with `chat_template` = `template` (a Jinja string, or a template config passed through
      `template.to_chat_template`), and `generation_config.json` whose eos_token_id is `eos_token` (default: the
      tokenizer's EOS, which is the token the MFTCoder template ends assistant turns with).
    - `state_dict`: a full (gathered) state dict for sharded backends (FSDP2 / ZeRO-3); call on rank 0 only.
    - `extra_files`: {name in out_dir: source file} copied in before the rename (e.g. mft_train.json).
    """
    out_dir = Path(out_dir).absolute()
    model = unwrap_model(model)
    hf = hf_model(model)
    eos = eos_token if eos_token is not None else tokenizer.eos_token
    eos_id = tokenizer.convert_tokens_to_ids(eos) if eos is not None else None
    if eos_id is None or (tokenizer.unk_token_id is not None and eos_id == tokenizer.unk_token_id and eos != tokenizer.unk_token):
        raise ValueError(f"save: EOS token {eos!r} is not in the tokenizer's vocabulary")
    chat_template = _chat_template_string(template, tokenizer)

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = chat_template
    if tok.eos_token != eos:
        tok.eos_token = eos
    generation_config = _generation_config(hf, tok, eos_id)
    hf.config.eos_token_id = eos_id
    hf.config.pad_token_id = generation_config.pad_token_id
    hf.config.bos_token_id = tok.bos_token_id

    peft = sys.modules.get("peft")  # never imported by a full fine-tune (see unwrap.hf_model)
    with atomic_directory(out_dir) as tmp, quiet_save():
        if peft is not None and isinstance(model, peft.PeftModel):
            model.save_pretrained(str(tmp), state_dict=state_dict)
            base = model.peft_config["default"].base_model_name_or_path or ""
            if os.path.realpath(base) in _INIT_BASES:
                shutil.copytree(base, tmp / BASE_MODEL_SUBDIR)
                generation_config.save_pretrained(str(tmp / BASE_MODEL_SUBDIR))
                config_path = tmp / "adapter_config.json"
                adapter_config = json.loads(config_path.read_text())
                # Relative to the adapter directory (merge.resolve_base reads it so): callers often write to a
                # temp dir and rename it, and run directories move, so an absolute path would go stale.
                adapter_config["base_model_name_or_path"] = BASE_MODEL_SUBDIR
                config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
        else:
            hf.generation_config = generation_config
            hf.save_pretrained(str(tmp), state_dict=state_dict)
        tok.save_pretrained(str(tmp))
        generation_config.save_pretrained(str(tmp))
        for name, source in (extra_files or {}).items():
            shutil.copy2(source, tmp / name)
    return out_dir
