"""Shared builders for trainer tests: a tiny tokenizer, a tiny Contract-1 prepared dataset, tiny models.

Test files import these (`from trainer_testkit import tiny_tokenizer`; the root pyproject puts this folder on
pytest's `pythonpath`); `conftest.py` wraps the common ones as fixtures. Names here are stable.

- `tiny_tokenizer()` / `tiny_tokenizer_dir()`: a byte-level BPE trained in-process on synthetic code and prose,
  cached under the system temp dir (keyed by the corpus and vocab size), loaded fresh on every call.
- `write_prepared_dataset(root, ...)`: a prepared dataset written with pyarrow exactly as Contract 1 describes
  (`manifest.json` + `train/<task>/part-NNNNN.arrow` + `valid/<task>/...`), tasks of unequal sizes, multi-round
  conversations with and without a system turn; optional `kind: text` task for pretraining.
- `tiny_model(arch, vocab_size, ...)`: a random llama / qwen2 (or any family with the same config fields) built from
  its transformers config class, no hub.
- `TINY_INIT`, `tiny_config(root, dataset, **top)`: a 6-step full fine-tune of a tiny llama (a `TrainConfig`).
- `FAMILIES`: a tiny `model.init` per family the trainer names; `pack`, `stack`, `random_samples`: hand-built
  packed micro-batches.
- `sample_conversations()`: hand-written conversations (single and multi round, with and without system).
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from mft_trainer.config import TrainConfig

TOKENIZER_VOCAB_SIZE = 512

_NAMES = ["alpha", "beta", "gamma", "delta", "total", "count", "items", "value", "result", "index", "text", "numbers"]
_OPS = ["+", "-", "*"]

EVAL_USER_TURN = (
    "Complete the following Python function. Answer with the whole function in a ```python code block.\n\n"
    "```python\n{prompt}\n```"
)


def _synthetic_function(rng: random.Random) -> str:
    name = rng.choice(_NAMES) + "_" + rng.choice(_NAMES)
    a, b = rng.sample(_NAMES, 2)
    op = rng.choice(_OPS)
    lines = [f"def {name}({a}, {b}):", f'    """Return {a} {op} {b}."""']
    for _ in range(rng.randint(0, 4)):
        lines.append(f"    {a} = {a} {op} {rng.randint(1, 9)}")
    lines.append(f"    return {a} {op} {b}")
    return "\n".join(lines)


def tokenizer_corpus() -> list[str]:
    """Deterministic training texts: synthetic Python, prose, and the chat/eval scaffolding the tests render."""
    rng = random.Random(1234)
    texts = [_synthetic_function(rng) for _ in range(400)]
    texts += [
        "Write a function that adds two numbers and returns the result.",
        "Sure, here is the function you asked for.",
        EVAL_USER_TURN.format(prompt='def add(a, b):\n    """Add a and b."""\n'),
        "<s>system\nYou are a helpful coding assistant.\n<s>human\nHello\n<s>bot\nHi!\n",
        "import os\nimport sys\nfor i in range(10):\n    print(i)\nclass Point:\n    pass\n",
    ] * 5
    return texts


def tiny_tokenizer_dir(vocab_size: int = TOKENIZER_VOCAB_SIZE) -> Path:
    """Directory of the cached tiny tokenizer; trained (about 50 ms) when missing."""
    from mft_trainer.data.tokenizer_build import train_tokenizer

    corpus = tokenizer_corpus()
    key = hashlib.sha256(("\x00".join(corpus) + f"|{vocab_size}|v1").encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"mft-test-tokenizer-{key}"
    if not (out / "tokenizer.json").exists():
        train_tokenizer(corpus, vocab_size, out)
    return out


def tiny_tokenizer(vocab_size: int = TOKENIZER_VOCAB_SIZE):
    """A fresh `PreTrainedTokenizerFast` loaded from the cached tiny tokenizer directory."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir(vocab_size)))


def sample_conversations() -> list[list[dict[str, str]]]:
    """Hand-written conversations covering single/multi round, with/without system, the eval user turn."""
    return [
        [
            {"role": "user", "content": "Write a function that adds two numbers."},
            {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
        ],
        [
            {"role": "system", "content": "You are a helpful coding assistant."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": "Count the items in a list."},
            {"role": "assistant", "content": "def count(items):\n    return len(items)"},
        ],
        [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": "second answer"},
            {"role": "user", "content": "third question"},
            {"role": "assistant", "content": "third answer"},
        ],
        [
            {"role": "user", "content": EVAL_USER_TURN.format(prompt='def add(a, b):\n    """Add a and b."""\n')},
            {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"},
        ],
    ]


def _conversation(rng: random.Random, task_index: int, i: int) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": "You are a helpful coding assistant."})
    rounds = 1 if rng.random() < 0.6 else rng.randint(2, 3)
    for r in range(rounds):
        body = "\n\n".join(_synthetic_function(rng) for _ in range(rng.randint(1, 1 + task_index * 2)))
        messages.append({"role": "user", "content": f"Task {task_index} sample {i} round {r}: write the function."})
        messages.append({"role": "assistant", "content": body})
    return messages


MESSAGES_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("messages", MESSAGES_TYPE),
        ("source", pa.string()),
        ("source_index", pa.int64()),
        ("content_hash", pa.string()),
    ]
)


def write_arrow_shard(path: Path, rows: list[dict[str, Any]], *, stream: bool = True) -> str:
    """Write one Contract-1 Arrow IPC shard (stream format like mft-prep, or file format), temp then rename;
    return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    tmp = path.with_name(path.name + ".tmp")
    new_writer = pa.ipc.new_stream if stream else pa.ipc.new_file
    with pa.OSFile(str(tmp), "wb") as sink, new_writer(sink, SCHEMA) as writer:
        writer.write_table(table)
    tmp.rename(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_prepared_dataset(
    root: Path,
    tasks: dict[str, int] | None = None,
    *,
    valid_per_task: int = 4,
    text_tasks: dict[str, int] | None = None,
    rows_per_shard: int = 25,
    seed: int = 0,
    records: dict[str, list[list[dict[str, str]]]] | None = None,
    stream_format: bool = True,
) -> Path:
    """Write a tiny Contract-1 prepared dataset at `root` and return `root`.

    tasks: train record count per chat task (default 3 tasks of unequal sizes: 40, 17, 9), each also gets
    `valid_per_task` validation records. text_tasks: train counts of `kind: text` tasks (one assistant turn holding raw
    code). records: explicit train conversations per task (overrides the generated ones for that task).
    stream_format: Arrow IPC stream files as mft-prep writes (manifest `shard_format: arrow-ipc-stream`), else the
    IPC file format. Deterministic in `seed`.
    """
    root = Path(root)
    rng = random.Random(seed)
    tasks = dict(tasks) if tasks is not None else {"code-a": 40, "code-b": 17, "chat-c": 9}
    text_tasks = dict(text_tasks or {})
    records = dict(records or {})
    for name in records:
        tasks.setdefault(name, len(records[name]))
    manifest_tasks: dict[str, Any] = {}
    shards: list[dict[str, Any]] = []
    all_names = sorted(set(tasks) | set(text_tasks))
    for task_index, name in enumerate(all_names):
        kind = "text" if name in text_tasks else "chat"
        counts: dict[str, int] = {}
        for split in ("train", "valid"):
            if split == "train":
                n = text_tasks.get(name, tasks.get(name, 0))
            else:
                n = valid_per_task
            rows = []
            for i in range(n):
                if split == "train" and name in records:
                    messages = records[name][i]
                elif kind == "text":
                    body = "\n\n".join(_synthetic_function(rng) for _ in range(rng.randint(1, 6)))
                    messages = [{"role": "assistant", "content": body}]
                else:
                    messages = _conversation(rng, task_index, i)
                content = json.dumps(messages, sort_keys=True)
                rows.append(
                    {
                        "id": f"{name}-{split}-{i:05d}",
                        "task": name,
                        "messages": messages,
                        "source": f"synthetic/{name}.jsonl",
                        "source_index": i,
                        "content_hash": hashlib.sha256(content.encode()).hexdigest(),
                    }
                )
            counts[split] = len(rows)
            for part, start in enumerate(range(0, max(len(rows), 1), rows_per_shard)):
                chunk = rows[start : start + rows_per_shard]
                if not chunk:
                    continue
                rel = f"{split}/{name}/part-{part:05d}.arrow"
                sha = write_arrow_shard(root / rel, chunk, stream=stream_format)
                shards.append({"path": rel, "split": split, "task": name, "rows": len(chunk), "sha256": sha})
        manifest_tasks[name] = {"kind": kind, "splits": {s: {"records": c} for s, c in counts.items()}}
    manifest = {
        "schema_version": 1,
        "shard_format": "arrow-ipc-stream" if stream_format else "arrow-ipc-file",
        "config_hash": hashlib.sha256(f"fixture-{seed}".encode()).hexdigest(),
        "tasks": manifest_tasks,
        "shards": shards,
        "totals": {"read": sum(s["rows"] for s in shards), "kept": sum(s["rows"] for s in shards)},
    }
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.rename(root / "manifest.json")
    return root


def tiny_model(
    arch: str = "llama",
    vocab_size: int = TOKENIZER_VOCAB_SIZE,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 512,
    attn_implementation: str = "sdpa",
    seed: int = 0,
):
    """A random tiny causal LM of family `arch` (llama, qwen2, mistral, ...) built from its config class, eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        arch,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model.eval()


TINY_INIT = {"architecture": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512}


def tiny_config(root: Path, dataset: Path, **top) -> TrainConfig:
    raw = {
        "model": {"init": TINY_INIT, "tokenizer": str(tiny_tokenizer_dir()), "dtype": "fp32",
                  "attn_implementation": "sdpa"},
        "peft": {"method": "full"},
        "data": {"path": str(dataset), "num_workers": 0, "cache_dir": str(root / "cache")},
        "output_dir": str(root / "out"),
        "max_steps": 6,
        "seq_length": 256,
        "micro_batch_size": 2,
        "grad_accum": 2,
        "optimizer": {"lr": 1e-2},
        "logging": {"tensorboard": False},
    }
    for key, value in top.items():
        node = raw
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return TrainConfig.from_dict(raw)


# ---- model families and hand-built packed rows
_DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128)
FAMILIES: dict[str, dict] = {
    "llama": dict(architecture="llama", **_DECODER),
    "codellama": dict(architecture="codellama", **_DECODER,
                      rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}),
    "deepseek": dict(architecture="deepseek", **_DECODER,
                     rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 100_000.0}),
    "mistral": dict(architecture="mistral", **_DECODER, sliding_window=64),
    "mixtral": dict(architecture="mixtral", **_DECODER, num_local_experts=4, num_experts_per_tok=2),
    "qwen2": dict(architecture="qwen2", **_DECODER),
    "qwen2_moe": dict(architecture="qwen2_moe", **_DECODER, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=32, shared_expert_intermediate_size=64),
    "starcoder": dict(architecture="starcoder", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=128),
    "starcoder2": dict(architecture="starcoder2", **_DECODER),
    "gpt_neox": dict(architecture="gpt_neox", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=128),
    "phi": dict(architecture="phi", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=128),
    "gemma": dict(architecture="gemma", **_DECODER, head_dim=8),
}
MOE = {"mixtral", "qwen2_moe"}


def pack(samples: list[list[int]], length: int) -> dict[str, torch.Tensor]:
    """One row holding `samples` back to back, then padding: the micro-batch layout `mft_trainer.model.forward` takes."""
    row = {k: [] for k in ("input_ids", "targets", "position_ids", "segment_ids", "task_ids", "sample_ids")}
    for index, ids in enumerate(samples):
        row["input_ids"] += ids
        row["targets"] += ids[1:] + [-100]
        row["position_ids"] += list(range(len(ids)))
        row["segment_ids"] += [index + 1] * len(ids)
        row["task_ids"] += [0] * len(ids)
        row["sample_ids"] += [index] * len(ids)
    pad = length - len(row["input_ids"])
    assert pad >= 0
    for key, value in (("input_ids", 0), ("targets", -100), ("position_ids", 0), ("segment_ids", 0),
                       ("task_ids", -1), ("sample_ids", -1)):
        row[key] += [value] * pad
    return {k: torch.tensor([v], dtype=torch.long) for k, v in row.items()}


def stack(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def random_samples(vocab: int, lengths: tuple[int, ...], seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
