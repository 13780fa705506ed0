"""`generate()`: the seeded synthetic multi-task code corpus, its held-out problems and their proofs.

Output layout (all paths relative to `output_dir`):

    raw/text_to_code.jsonl        chat_rounds   (the largest task)
    raw/translation.jsonl         chat_rounds   Lisp -> Python
    raw/code_completion.jsonl     chat_rounds   function prefix -> whole function
    raw/unit_tests.json           Evol pairs    function -> test function with asserts
    raw/code_explanation.json     Evol pairs    function -> function with its docstring
    heldout/<task>.jsonl          HumanEval-format problems, new (operation, names, constants) combinations
    heldout_hard/<task>.jsonl     the same, with identifiers that never occur in any training record
    prep_tasks.yaml               the mft-prep `tasks:` list (with settings) that reads raw/
    synth_manifest.json           config, counts, checks and the sha256 of every file; written last

Everything derives from `random.Random` streams seeded by strings (`"mft-synth:<seed>:<purpose>"`, hashed with
SHA-512 by the standard library, not by the salted `hash()`), so the same config gives the same bytes on every
run and machine. Before writing, the generator proves what the evaluation relies on and raises otherwise:
every canonical solution passes its own `check`, every `check` rejects its mutant, no held-out prompt or key
occurs in training (exact and n-gram, see `overlap.py`), no hard-split identifier occurs in training.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .config import EXECUTABLE_TASKS, HELDOUT_TASKS, TASK_FORMATS, TASKS, SynthConfig
from .files import json_array_bytes, jsonl_bytes, sha256_bytes, sha256_file, write_atomic, yaml_string
from .names import NameSource, reserved_words
from .ops import DOC_WORDS, TEMPLATES, Program, Template, make_program
from .overlap import TrainingIndex
from .tasks import (
    GenerationError,
    chat_record,
    heldout_problem,
    mutant_program,
    pair_record,
    problem_identifiers,
    prompt_for,
    training_turns,
)
from .wording import ALL_WORDINGS, EVAL_INSTRUCTION

SCHEMA_VERSION = 1
MANIFEST = "synth_manifest.json"
PREP_CONFIG = "prep_tasks.yaml"
SPLITS = ("heldout", "heldout_hard")


def raw_file(task: str) -> str:
    return f"raw/{task}.{'jsonl' if TASK_FORMATS[task] == 'chat_rounds' else 'json'}"


class SynthSummary(BaseModel):
    """What `generate` wrote (or found already complete, `reused=True`)."""

    output_dir: Path
    seed: int
    scale: float
    config_hash: str
    train_counts: dict[str, int]
    heldout_counts: dict[str, int]
    heldout_hard_counts: dict[str, int]
    files: dict[str, str]  # path relative to output_dir -> sha256
    reused: bool = False

    @property
    def manifest_path(self) -> Path:
        return self.output_dir / MANIFEST

    @property
    def prep_config_path(self) -> Path:
        return self.output_dir / PREP_CONFIG

    def heldout_files(self, split: str = "heldout") -> dict[str, Path]:
        """Task -> HumanEval-format problem file of `split` (`heldout` or `heldout_hard`)."""
        counts = self.heldout_counts if split == "heldout" else self.heldout_hard_counts
        return {t: self.output_dir / split / f"{t}.jsonl" for t, n in counts.items() if n > 0}

    def prep_tasks(self) -> list[dict[str, Any]]:
        """The entries of `prep_tasks.yaml` with absolute source paths, for building an mft-prep config in code."""
        return [
            {**entry, "sources": [str(self.output_dir / s) for s in entry["sources"]]}
            for entry in prep_task_entries(self.train_counts)
        ]


@dataclass
class Corpus:
    """Everything to write, in memory (a few MB at the default size)."""

    files: dict[str, bytes] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    train_counts: dict[str, int] = field(default_factory=dict)
    heldout_counts: dict[str, int] = field(default_factory=dict)
    heldout_hard_counts: dict[str, int] = field(default_factory=dict)
    task_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)


def _rng(seed: int, *purpose: str) -> random.Random:
    return random.Random(":".join(("mft-synth", str(seed), *purpose)))


def _templates(rng: random.Random) -> Iterator[Template]:
    """Templates in shuffled rounds: every operation appears about equally often in every task and split."""
    while True:
        round_ = list(TEMPLATES)
        rng.shuffle(round_)
        yield from round_


def _draw_program(
    rng: random.Random, templates: Iterator[Template], names: NameSource, cfg: SynthConfig
) -> Program:
    template = next(templates)
    drawn = names.draw(1 + len(template.types))
    return make_program(template, drawn[0], drawn[1:], rng, cfg.const_min, cfg.const_max)


def prep_task_entries(train_counts: dict[str, int]) -> list[dict[str, Any]]:
    """mft-prep task settings: explicit format, Evol quality rules off for the pair tasks, a fixed valid size."""
    entries = []
    for task in TASKS:
        entry: dict[str, Any] = {"name": task, "sources": [raw_file(task)], "format": TASK_FORMATS[task]}
        if TASK_FORMATS[task] == "pairs":
            entry["quality"] = {"enabled": False}
        entry["split"] = {"valid_count": min(50, max(10, train_counts[task] // 10))}
        entries.append(entry)
    return entries


def prep_yaml(cfg: SynthConfig, train_counts: dict[str, int]) -> bytes:
    lines = [
        f"# mft-prep tasks for the synthetic corpus of `mft-prep synth` (seed {cfg.seed}, scale {cfg.scale}).",
        "# Source paths are relative to this file's folder. The pair-format tasks turn the Evol-instruction quality",
        "# rules off: their answers are short functions (under 50 words, under 3 lines), which those rules, written",
        "# for Evol-instruction-66k, would reject. Each task keeps a fixed number of records for validation.",
        "tasks:",
    ]
    for entry in prep_task_entries(train_counts):
        lines.append(f"  - name: {entry['name']}")
        lines.append(f"    sources: [{', '.join(yaml_string(s) for s in entry['sources'])}]")
        lines.append(f"    format: {entry['format']}")
        if "quality" in entry:
            lines.append("    quality:")
            lines.append("      enabled: false")
        lines.append("    split:")
        lines.append(f"      valid_count: {entry['split']['valid_count']}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def run_check(program_text: str, test: str, entry_point: str) -> bool:
    """Run `program + test + check(entry_point)` in a fresh namespace: True when it finishes without error."""
    namespace: dict[str, Any] = {}
    try:
        exec(f"{program_text}\n{test}\ncheck({entry_point})\n", namespace)  # noqa: S102 - our own generated code
    except Exception:
        return False
    return True


def build_corpus(cfg: SynthConfig) -> Corpus:
    """Generate everything in memory and prove the held-out guarantees; raises `GenerationError` if one fails."""
    corpus = Corpus()
    reserved = reserved_words(ALL_WORDINGS, DOC_WORDS)
    train_keys: set[tuple[Any, ...]] = set()
    train_names: set[str] = set()
    texts: list[str] = []
    counts = cfg.scaled_train_counts()

    for task in TASKS:
        rng = _rng(cfg.seed, "train", task)
        templates = _templates(rng)
        names = NameSource(rng, reserved, cfg.name_syllables_min, cfg.name_syllables_max)
        records: list[dict[str, Any]] = []
        lengths: list[int] = []
        ops: set[str] = set()
        for index in range(counts[task]):
            program = _draw_program(rng, templates, names, cfg)
            while program.key in train_keys:
                program = _draw_program(rng, templates, names, cfg)
            train_keys.add(program.key)
            train_names.update((program.name, *program.params))
            ops.add(program.op)
            user, assistant = training_turns(task, program, rng, cfg.unit_test_asserts, cfg.answer_docstring)
            if TASK_FORMATS[task] == "chat_rounds":
                records.append(chat_record(index, task, user, assistant))
            else:
                records.append(pair_record(user, assistant))
            texts.append(user + "\n" + assistant)
            lengths.append(len(user) + len(assistant))
        path = raw_file(task)
        corpus.files[path] = jsonl_bytes(records) if path.endswith(".jsonl") else json_array_bytes(records)
        corpus.records[path] = len(records)
        corpus.train_counts[task] = len(records)
        corpus.task_stats[task] = {
            "format": TASK_FORMATS[task],
            "file": path,
            "train_records": len(records),
            "operations": len(ops),
            "max_chars": max(lengths),
            "mean_chars": round(sum(lengths) / len(lengths), 1),
        }

    index = TrainingIndex(texts, cfg.ngram)
    pool = sorted(train_names)
    passed = rejected = total = 0
    heldout_keys: set[tuple[Any, ...]] = set()  # across splits and tasks: every held-out problem is distinct
    for split in SPLITS:
        counts_for_split = cfg.heldout_counts if split == "heldout" else cfg.heldout_hard_counts
        target = corpus.heldout_counts if split == "heldout" else corpus.heldout_hard_counts
        for task in HELDOUT_TASKS:
            count = counts_for_split.get(task, 0)
            if task in EXECUTABLE_TASKS or count:  # an unseen task asked for no problems leaves no trace
                target[task] = count
            if count == 0:
                continue
            rng = _rng(cfg.seed, split, task)
            templates = _templates(rng)
            if split == "heldout":  # names seen in training, in combinations never seen
                names = NameSource(rng, reserved, cfg.name_syllables_min, cfg.name_syllables_max, pool=pool)
            else:  # names that occur nowhere in training
                names = NameSource(
                    rng, reserved, cfg.name_syllables_min, cfg.name_syllables_max, exclude=index.identifiers
                )
            problems: list[dict[str, Any]] = []
            for i in range(count):
                for _ in range(1000):
                    program = _draw_program(rng, templates, names, cfg)
                    ids = problem_identifiers(task, program)
                    if program.key in train_keys or program.key in heldout_keys:
                        continue
                    if index.contaminated(prompt_for(task, program), ids):
                        continue
                    break
                else:
                    raise GenerationError(f"{split}/{task}: no uncontaminated problem found after 1000 tries")
                heldout_keys.add(program.key)
                asserts = cfg.unit_test_asserts if task == "unit_tests" else cfg.check_asserts
                problem, found = heldout_problem(f"synth/{split}/{task}/{i}", task, program, rng, asserts)
                total += 1
                passed += run_check(
                    problem["prompt"] + problem["canonical_solution"], problem["test"], problem["entry_point"]
                )
                rejected += not run_check(
                    mutant_program(task, problem, program, found.mutant),
                    problem["test"],
                    problem["entry_point"],
                )
                problems.append(problem)
            corpus.files[f"{split}/{task}.jsonl"] = jsonl_bytes(problems)
            corpus.records[f"{split}/{task}.jsonl"] = len(problems)
            corpus.task_stats.setdefault(task, {"unseen": task not in TASKS})[split] = len(problems)

    corpus.checks = _prove(corpus, index, train_keys, cfg.ngram, passed, rejected, total)
    corpus.files[PREP_CONFIG] = prep_yaml(cfg, corpus.train_counts)
    return corpus


def _prove(
    corpus: Corpus,
    index: TrainingIndex,
    train_keys: set[tuple[Any, ...]],
    ngram: int,
    passed: int,
    rejected: int,
    total: int,
) -> dict[str, Any]:
    """Re-check the held-out files as written (not the generator's intent) and raise on any violation."""
    exact = ngram_hits = hard_leaks = 0
    for split in SPLITS:
        for task in HELDOUT_TASKS:
            data = corpus.files.get(f"{split}/{task}.jsonl")
            if data is None:
                continue
            for line in data.decode("utf-8").splitlines():
                problem = json.loads(line)
                prompt = problem["prompt"]
                idents = _prompt_identifiers(problem)
                exact += index.exact_hit(prompt)
                ngram_hits += index.ngram_hits(prompt, idents) > 0
                if split == "heldout_hard":
                    hard_leaks += any(name in index.identifiers for name in idents)
    checks = {
        "ngram": ngram,
        "heldout_problems": total,
        "canonical_passed": passed,
        "mutants_rejected": rejected,
        "heldout_exact_hits": exact,
        "heldout_ngram_hits": ngram_hits,
        "hard_identifiers_in_training": hard_leaks,
        "training_keys": len(train_keys),
    }
    failures = [
        f"{passed}/{total} canonical solutions pass their check" if passed != total else "",
        f"{rejected}/{total} mutants rejected" if rejected != total else "",
        f"{exact} held-out prompts occur verbatim in training" if exact else "",
        f"{ngram_hits} held-out prompts share a {ngram}-gram with training" if ngram_hits else "",
        f"{hard_leaks} hard problems use an identifier seen in training" if hard_leaks else "",
    ]
    failures = [f for f in failures if f]
    if failures:
        raise GenerationError("held-out guarantees violated: " + "; ".join(failures))
    return checks


def _prompt_identifiers(problem: dict[str, Any]) -> tuple[str, ...]:
    """The function and argument names of a problem, read back from its prompt's first line."""
    header = problem["prompt"].split("\n", 1)[0]
    if problem["entry_point"].startswith("test_"):
        header = next(
            line.strip() for line in problem["prompt"].split("\n")[1:] if line.strip().startswith("def ")
        )
    name, _, rest = header[len("def ") :].partition("(")
    params = tuple(p.strip() for p in rest.split(")", 1)[0].split(",") if p.strip())
    return (name, *params, problem["entry_point"])


def _manifest(cfg: SynthConfig, corpus: Corpus) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": "mft_dataprep.synth",
        "seed": cfg.seed,
        "scale": cfg.scale,
        "config": cfg.model_dump(mode="json"),
        "config_hash": cfg.config_hash(),
        "eval_instruction": EVAL_INSTRUCTION,
        "tasks": corpus.task_stats,
        "checks": corpus.checks,
        "files": {
            path: {"sha256": sha256_bytes(data), "bytes": len(data), "records": corpus.records.get(path)}
            for path, data in sorted(corpus.files.items())
        },
    }


def _heldout_counts(counts: dict[str, int]) -> dict[str, int]:
    """Every executable task's count, and an unseen task's when it has problems."""
    return {t: counts.get(t, 0) for t in HELDOUT_TASKS if t in EXECUTABLE_TASKS or counts.get(t, 0)}


def _summary(output_dir: Path, manifest: dict[str, Any], reused: bool) -> SynthSummary:
    cfg = manifest["config"]
    tasks = manifest["tasks"]
    return SynthSummary(
        output_dir=output_dir,
        seed=manifest["seed"],
        scale=manifest["scale"],
        config_hash=manifest["config_hash"],
        train_counts={t: tasks[t]["train_records"] for t in TASKS},
        heldout_counts=_heldout_counts(cfg["heldout_counts"]),
        heldout_hard_counts=_heldout_counts(cfg["heldout_hard_counts"]),
        files={path: entry["sha256"] for path, entry in manifest["files"].items()},
        reused=reused,
    )


def _complete_manifest(output_dir: Path, cfg: SynthConfig) -> dict[str, Any] | None:
    """The existing manifest when it was written for this config and every file it lists is intact."""
    path = output_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("schema_version") != SCHEMA_VERSION or manifest.get("config_hash") != cfg.config_hash():
        return None
    for rel, entry in manifest.get("files", {}).items():
        file = output_dir / rel
        if not file.is_file() or sha256_file(file) != entry.get("sha256"):
            return None
    return manifest


def resolve_config(seed: int, scale: float, config: SynthConfig | None) -> SynthConfig:
    if config is None:
        return SynthConfig(seed=seed, scale=scale)
    if (seed, scale) != (0, 1.0) and (seed, scale) != (config.seed, config.scale):
        raise ValueError(
            f"generate(): seed={seed}, scale={scale} conflict with config.seed={config.seed}, "
            f"config.scale={config.scale}; set them in the config only"
        )
    return config


def generate(
    output_dir: Path | str, seed: int = 0, scale: float = 1.0, config: SynthConfig | None = None
) -> SynthSummary:
    """Write the synthetic corpus to `output_dir` (see the module docstring) and return what was written.

    Idempotent: a rerun with the same config finds the complete manifest, verifies every file's sha256 and
    returns at once (`reused=True`); anything missing or changed is regenerated, byte-identical for the same
    config. `config` overrides `seed` and `scale` (passing both with different values is an error).
    """
    cfg = resolve_config(seed, scale, config)
    output_dir = Path(output_dir)
    existing = _complete_manifest(output_dir, cfg)
    if existing is not None:
        return _summary(output_dir, existing, reused=True)
    corpus = build_corpus(cfg)
    manifest_path = output_dir / MANIFEST
    old_files: set[str] = set()
    if manifest_path.is_file():
        try:
            old_files = set(json.loads(manifest_path.read_text(encoding="utf-8")).get("files", {}))
        except (OSError, json.JSONDecodeError):
            old_files = set()
        manifest_path.unlink()  # from here until the new manifest lands, the folder does not look complete
    for rel, data in sorted(corpus.files.items()):
        write_atomic(output_dir / rel, data)
    for rel in sorted(old_files - set(corpus.files)):
        (output_dir / rel).unlink(missing_ok=True)
    manifest = _manifest(cfg, corpus)
    write_atomic(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return _summary(output_dir, manifest, reused=False)
