"""``mft-eval``: a thin typer CLI over :mod:`mft_eval.api` (score, run, report)."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

from mft_eval.api import EvalConfig
from mft_eval.api import run as api_run
from mft_eval.api import score as api_score
from mft_eval.report import print_report

app = typer.Typer(add_completion=False, help="Generate completions from a checkpoint and score them in a sandbox.")
console = Console()


def _config(**values) -> EvalConfig:
    try:
        return EvalConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            console.print(f"[red]config error[/red] {'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
        raise typer.Exit(2) from exc


def _ks(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"--k {text!r}: expected comma-separated integers like 1,10,100") from exc


@app.command()
def score(
    samples: Path = typer.Option(..., help="samples file: mft-eval samples.jsonl, human-eval or codefuse format"),
    output: Path = typer.Option(..., help="output directory"),
    benchmark: str = typer.Option("humaneval", help="humaneval, mbpp, mbpp:PATH or a HumanEval-format JSONL"),
    header: str = typer.Option("none", help="'codefuse' prepends codefuse-evaluation's import header"),
    timeout: float = typer.Option(None, help="seconds per program (default 3; HumanEval-X: the language's "
                                  "limit, compilation included)"),
    language: str = typer.Option(None, help="the HumanEval-X language of a --benchmark PATH: cpp, java, js, "
                                 "go or rust"),
    k: str = typer.Option("1,10,100", help="pass@k values"),
    workers: int = typer.Option(0, help="parallel programs (0 = 2 x CPUs)"),
    limit: int = typer.Option(None, help="only the first N problems"),
) -> None:
    """Score existing completions."""
    config = _config(samples=samples, output=output, benchmark=benchmark, header=header, timeout=timeout,
                     language=language,
                     k=_ks(k), workers=workers, limit=limit)
    print_report(api_score(config), console, max_failing=20)


@app.command()
def run(
    model: Path = typer.Option(..., help="checkpoint directory: a full HF model or a PEFT adapter"),
    output: Path = typer.Option(..., help="output directory"),
    benchmark: str = typer.Option("humaneval", help="humaneval, mbpp, mbpp:PATH or a HumanEval-format JSONL"),
    prompt_mode: str = typer.Option(None, help="base, chat or mftcoder (default: chat if the tokenizer has a template)"),
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
    header: str = typer.Option("none", help="'codefuse' prepends codefuse-evaluation's import header"),
    backend: str = typer.Option("hf", help="hf or vllm"),
    seed: int = typer.Option(0),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16, float16"),
    device: str = typer.Option("cpu", help="torch device for the hf backend"),
    k: str = typer.Option("1,10,100", help="pass@k values"),
    limit: int = typer.Option(None, help="only the first N problems"),
    workers: int = typer.Option(0, help="parallel programs (0 = 2 x CPUs)"),
) -> None:
    """Generate completions with a checkpoint, then score them."""
    config = _config(model=str(model), output=output, benchmark=benchmark, prompt_mode=prompt_mode, n=n,
                     temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size,
                     stop=stop or None, timeout=timeout,
                     language=language, header=header, backend=backend, seed=seed, dtype=dtype,
                     device=device, k=_ks(k), limit=limit, workers=workers)
    print_report(api_run(config), console, max_failing=20)


@app.command()
def report(output: Path = typer.Argument(..., help="an mft-eval output directory")) -> None:
    """Print the summary table, counts by status and the failing tasks again."""
    try:
        print_report(output, console)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
