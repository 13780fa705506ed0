"""Train a small byte-level BPE tokenizer and save it as a Hugging Face tokenizer directory.

No hub is reachable here and no usable small code tokenizer ships in a package registry (docs/reference.md §7), so tests,
the tiny-cpu example and the demo train their own with the `tokenizers` library. Byte-level BPE never meets an unknown
character, and its offsets map every token back to the characters it came from, which `template.py` relies on to
derive loss masks.
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from mft_trainer.atomic import atomic_directory

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|startoftext|>"


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: Path,
    *,
    min_frequency: int = 2,
    model_max_length: int = 1_000_000,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`, save it to `out_dir` (written to a temp name, then renamed), return it.

    Special tokens: EOS `<|endoftext|>` (id 0), PAD `<|pad|>` (id 1), BOS `<|startoftext|>` (id 2). No BOS/EOS is added
    automatically when encoding: the template decides where they go.
    """
    if vocab_size < 256 + 3:
        raise ValueError(f"vocab_size={vocab_size}: a byte-level BPE needs at least 259 (256 bytes + 3 specials)")
    out_dir = Path(out_dir)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN, BOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        model_max_length=model_max_length,
    )
    with atomic_directory(out_dir) as tmp:
        hf.save_pretrained(str(tmp))
    return hf


def stdlib_python_texts(max_bytes: int = 5_000_000, root: Path | None = None) -> Iterator[str]:
    """Yield the text of the Python standard library's `.py` files (sorted, so deterministic) up to `max_bytes`.

    The demo trains its tokenizer on these: real Python source, present on every machine that runs Python.
    """
    base = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise FileNotFoundError(f"standard library directory {base} not found (sys.prefix={sys.prefix})")
    total = 0
    for path in sorted(base.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        total += len(text.encode("utf-8"))
        yield text
        if total >= max_bytes:
            return
