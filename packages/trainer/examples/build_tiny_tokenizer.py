"""Rebuild `tiny-tokenizer/`, the byte-level BPE shipped for examples/tiny-cpu.yaml.

No hub is reachable and no small code tokenizer ships in a package registry (docs/reference.md §7), so the example uses
this one: 2048 tokens trained on 2 MB of the Python standard library with mft_trainer.tokenizer_build.

    .venv/bin/python packages/trainer/examples/build_tiny_tokenizer.py
"""

from __future__ import annotations

from pathlib import Path

from mft_trainer.data.tokenizer_build import stdlib_python_texts, train_tokenizer

VOCAB_SIZE = 2048
CORPUS_BYTES = 2_000_000


def main() -> None:
    out = Path(__file__).resolve().parent / "tiny-tokenizer"
    tokenizer = train_tokenizer(stdlib_python_texts(CORPUS_BYTES), VOCAB_SIZE, out)
    print(f"wrote {out} ({len(tokenizer)} tokens)")


if __name__ == "__main__":
    main()
