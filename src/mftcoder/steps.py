"""Pipeline steps that belong to no single tool, run as `tool: python` stages (`callable: mftcoder.steps:NAME`).

Each takes `output` (the stage's output folder) plus its own keyword arguments from the stage's `args`.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path


def train_tokenizer(output: Path, sources: list[str], vocab_size: int = 4096, max_bytes: int = 5_000_000) -> None:
    """Train a byte-level BPE tokenizer on the files matching `sources` (globs, sorted), up to `max_bytes` of text.

    The demo trains it on the standard library of the interpreter running the pipeline: real code, on every machine.
    """
    from mft_trainer.data.tokenizer_build import train_tokenizer as train

    files = sorted({path for pattern in sources for path in glob.glob(pattern, recursive=True)})
    if not files:
        raise FileNotFoundError(f"tokenizer sources {sources} match no file")

    def texts() -> list[str]:
        chosen, total = [], 0
        for path in files:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            chosen.append(text)
            total += len(text.encode("utf-8"))
            if total >= max_bytes:
                break
        return chosen

    corpus = texts()
    train(corpus, vocab_size, Path(output))
    info = {"files": len(corpus), "bytes": sum(len(t.encode("utf-8")) for t in corpus), "vocab_size": vocab_size}
    (Path(output) / "mft_tokenizer.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
