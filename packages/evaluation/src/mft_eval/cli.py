"""``mft-eval``: a thin typer CLI over :mod:`mft_eval.api` (score, run, report).

Errors print one line ``error: ...`` and exit 1 (``--debug`` or MFT_DEBUG=1 for the traceback); progress goes to
stderr, as plain lines when it is not a terminal. CPU runs use OMP_WAIT_POLICY=PASSIVE unless it is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from mft_cli import ToolApp, output_console, prefer_passive_openmp
from pydantic import ValidationError

from mft_eval import __version__
from mft_eval.api import EvalConfig
from mft_eval.api import run as api_run
from mft_eval.api import score as api_score
from mft_eval.report import print_report

prefer_passive_openmp()  # none of the imports above loads torch, which reads OMP_WAIT_POLICY once when it loads

app = ToolApp("mft-eval", __version__, no_args_is_help=True,
              help="Generate completions from a checkpoint and score them in a sandbox.")

BENCHMARK_HELP = ("humaneval, mbpp, mbpp:PATH, humaneval-x:LANG (LANG: cpp, java, js, go, rust), or a HumanEval-format "
                  "JSONL path")
K_HELP = "pass@k values, e.g. 1,10 (default: those of 1, 10, 100 that the samples per problem allow)"
LIMIT_HELP = "only the first N problems (the score is then labelled partial)"


class ConfigInvalid(ValueError):
    """An option value the config schema rejects; the message names the option."""


def _config(**values) -> EvalConfig:
    try:
        return EvalConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = [f"--{'.'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg'].removeprefix('Value error, ')}"
                    for e in exc.errors()]
        raise ConfigInvalid("; ".join(problems)) from exc


def _ks(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"--k {text!r}: expected comma-separated integers like 1,10,100") from exc


@app.command()
def score(
    samples: Path = typer.Option(..., help="samples file: mft-eval samples.jsonl, human-eval or codefuse format"),
    output: Path = typer.Option(..., help="output directory"),
    benchmark: str = typer.Option("humaneval", help=BENCHMARK_HELP),
    header: Literal["none", "codefuse"] = typer.Option("none", help="codefuse: prepend codefuse-evaluation's imports"),
    timeout: float = typer.Option(None, help="seconds per program (default 3; HumanEval-X: the language's "
                                  "limit, compilation included)"),
    language: str = typer.Option(None, help="the HumanEval-X language of a --benchmark PATH: cpp, java, js, "
                                 "go or rust"),
    k: str = typer.Option(None, help=K_HELP),
    workers: int = typer.Option(0, help="parallel programs (0 = 2 x CPUs)"),
    limit: int = typer.Option(None, help=LIMIT_HELP),
    strict: bool = typer.Option(False, "--strict", help="stop at an unreadable samples line (default: report it, "
                                "skip it, count it in summary.json and label the score partial)"),
) -> None:
    """Score existing completions. An unreadable samples line is reported (file:line: reason) and skipped."""
    config = _config(samples=samples, output=output, benchmark=benchmark, header=header, timeout=timeout,
                     language=language,
                     k=_ks(k), workers=workers, limit=limit, strict=strict)
    print_report(api_score(config), output_console(), max_failing=20)


@app.command()
def run(
    model: Path = typer.Option(..., help="checkpoint directory: a full HF model or a PEFT adapter"),
    output: Path = typer.Option(..., help="output directory"),
    benchmark: str = typer.Option("humaneval", help=BENCHMARK_HELP),
    prompt_mode: Literal["base", "chat", "mftcoder"] = typer.Option(
        None, help="default: chat if the tokenizer has a chat template, else base"),
    n: int = typer.Option(1, help="samples per problem"),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    top_p: float = typer.Option(1.0),
    max_new_tokens: int = typer.Option(512),
    batch_size: int = typer.Option(8),
    stop: list[str] = typer.Option(None, help="stop sequence (repeatable); default: the mode's list"),
    timeout: float = typer.Option(None, help="seconds per program (default 3; HumanEval-X: the language's "
                                  "limit, compilation included)"),
    language: str = typer.Option(None, help="the HumanEval-X language of a --benchmark PATH: cpp, java, js, "
                                 "go or rust"),
    header: Literal["none", "codefuse"] = typer.Option("none", help="codefuse: prepend codefuse-evaluation's imports"),
    backend: Literal["hf", "vllm"] = typer.Option("hf", help="vllm: GPU generation, when installed"),
    seed: int = typer.Option(0),
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = typer.Option("auto", help="auto: the checkpoint's"),
    device: str = typer.Option("auto", help="torch device for the hf backend: auto (cuda when present, else cpu), "
                               "cpu, cuda, cuda:1"),
    k: str = typer.Option(None, help=K_HELP),
    limit: int = typer.Option(None, help=LIMIT_HELP),
    workers: int = typer.Option(0, help="parallel programs (0 = 2 x CPUs)"),
) -> None:
    """Generate completions with a checkpoint, then score them."""
    config = _config(model=str(model), output=output, benchmark=benchmark, prompt_mode=prompt_mode, n=n,
                     temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size,
                     stop=stop or None, timeout=timeout,
                     language=language, header=header, backend=backend, seed=seed, dtype=dtype,
                     device=device, k=_ks(k), limit=limit, workers=workers)
    print_report(api_run(config), output_console(), max_failing=20)


@app.command()
def report(output: Path = typer.Argument(..., help="an mft-eval output directory")) -> None:
    """Print the summary table, counts by status and the failing tasks again."""
    print_report(output, output_console())
