"""Checks of what a run reads, before any model is built: the prepared dataset (`data.path`) and the model and
tokenizer folders (`model.path`, `model.tokenizer`). `--dry-run` and the start of training run the same checks, so a
dry run catches what training would trip over; each error is one line naming the key and what was expected.

A pipeline cannot run these at validation time (an upstream stage may not have written its output yet); it calls
`check_inputs` when the stage is about to run.
"""

from __future__ import annotations

from pathlib import Path

from mft_trainer.config import ModelConfig, TrainConfig
from mft_trainer.data.dataset import PreparedDataset, PreparedDatasetError, open_prepared

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class InputError(ValueError):
    """An input of the run is missing or is not what its key expects."""


def open_dataset(cfg: TrainConfig) -> PreparedDataset:
    """The prepared dataset at `data.path`; a task the manifest names with no train records is an error unless
    `data.allow_empty_tasks`."""
    try:
        dataset = open_prepared(cfg.data.path)
    except PreparedDatasetError as exc:
        raise InputError(f"data.path: {exc}") from exc
    if dataset.empty_tasks and not cfg.data.allow_empty_tasks:
        names = ", ".join(dataset.empty_tasks)
        raise InputError(
            f"data.path: {cfg.data.path / 'manifest.json'} names task(s) with no train records: {names} (mft-prep "
            "kept none of their records; see its rejects.jsonl); fix their sources, or set "
            "data.allow_empty_tasks=true to train without them"
        )
    return dataset


def _is_local(value: str) -> bool:
    """A local path rather than a hub id (relative paths that exist were made absolute when the config loaded)."""
    return Path(value).is_absolute() or value.startswith(("./", "../", "~"))


def check_model_files(model: ModelConfig) -> None:
    """A local `model.path` is a Hugging Face model folder (config.json and weights); a local tokenizer folder holds
    tokenizer files. Hub ids are left to transformers."""
    if model.path is not None and _is_local(model.path):
        root = Path(model.path).expanduser()
        expected = "expected a Hugging Face model folder (config.json and *.safetensors weights) or a hub id"
        if not root.exists():
            raise InputError(f"model.path: {root} does not exist; {expected}")
        if not root.is_dir():
            raise InputError(f"model.path: {root} is a file; {expected}")
        if not any(root.iterdir()):
            raise InputError(f"model.path: {root} is an empty folder; {expected}")
        if not (root / "config.json").is_file():
            hint = " (it holds a LoRA adapter: merge it first with mft-train merge)" if (
                root / "adapter_config.json").is_file() else ""
            raise InputError(f"model.path: {root / 'config.json'} not found{hint}; {expected}")
        if not any(any(root.glob(p)) for p in WEIGHT_PATTERNS):
            raise InputError(f"model.path: {root} has config.json but no weights ({', '.join(WEIGHT_PATTERNS[:2])})")
    key = "model.tokenizer" if model.tokenizer else "model.path"
    tok = model.tokenizer_path
    if _is_local(tok):
        root = Path(tok).expanduser()
        if not root.is_dir():
            raise InputError(f"{key}: {root} does not exist; expected a tokenizer folder (tokenizer.json) or a hub id")
        if not any((root / name).is_file() for name in TOKENIZER_FILES):
            raise InputError(f"{key}: {root} holds no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})")


def check_inputs(cfg: TrainConfig) -> PreparedDataset:
    """Every check above; returns the opened dataset."""
    dataset = open_dataset(cfg)
    check_model_files(cfg.model)
    return dataset
