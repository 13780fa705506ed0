"""What the mft-eval command line shares with the other mft tools (the conventions of mft-prep's `cli_app`, kept
here because mft-eval imports no other mft package): `-h`, `--version` and `--debug` on the tool and on each
subcommand, flags listed without a `<bool>` type, errors as one line `error: ...` on stderr with exit status 1 (the
traceback only with `--debug` or MFT_DEBUG=1; click's usage errors keep exit status 2), a console that does not cut
tables at 80 columns when the output is a file or a pipe, and OpenMP threads that sleep while they wait
(`prefer_passive_openmp`)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

PIPE_WIDTH = 10_000  # columns of a console writing to a file or pipe: long names and paths stay whole


def prefer_passive_openmp() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the user set it: waiting OpenMP threads sleep instead of spinning, which on a
    machine with other work ran 0.97x instead of 0.11x the speed of one thread (docs/experiments.md). OpenMP reads
    it when torch loads, so call this before the first `import torch`."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def debug_enabled(ctx: typer.Context | None = None) -> bool:
    """--debug on this command line, or MFT_DEBUG set to anything but '' or '0'."""
    return bool(ctx is not None and ctx.meta.get("mft.debug")) or os.environ.get("MFT_DEBUG", "") not in ("", "0")


def output_console(stderr: bool = False) -> Console:
    """A rich console as wide as the terminal, or PIPE_WIDTH columns when not writing to one."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def error_line(exc: BaseException) -> str:
    """The one line an error prints (a message of several lines joined with '; '): our errors (ValueError, OSError)
    as they are, others with their type and a hint."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if isinstance(exc, ValueError | OSError) and text:
        return text
    return f"{type(exc).__name__}: {text} (--debug shows the traceback)" if text else type(exc).__name__


def _debug(ctx: typer.Context, value: bool) -> None:
    if value:
        ctx.meta["mft.debug"] = True


def _version(ctx: typer.Context, value: bool) -> None:
    if value:
        typer.echo(f"{ctx.command.tool} {ctx.command.version}")
        raise typer.Exit(0)


def _shared(
    debug: Annotated[bool, typer.Option("--debug", callback=_debug, expose_value=False, is_eager=True,
                                        help="show the traceback of an error (also MFT_DEBUG=1)")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, expose_value=False, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """The options every command gets (built by typer from this signature)."""


def _shared_params() -> list[Any]:
    probe = typer.Typer(add_completion=False)
    probe.command()(_shared)
    return list(typer.main.get_command(probe).params)


class _Conventions:
    tool = "mft"
    version = "0"

    def __init__(self, *args: Any, params: list[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, params=[*(params or []), *_shared_params()], **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # typer would show a flag as `<bool>`
        return params


class ToolCommand(_Conventions, TyperCommand):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise
        except Exception as exc:
            if debug_enabled(ctx):
                raise
            print(f"error: {error_line(exc)}", file=sys.stderr, flush=True)
            raise typer.Exit(1) from None


class ToolGroup(_Conventions, TyperGroup):
    """A group (the tool itself) with the same -h, --version and --debug as its commands."""


class ToolApp(typer.Typer):
    """A typer app with the conventions above: `ToolApp("mft-prep", __version__, help=...)`."""

    def __init__(self, tool: str, version: str, **kwargs: Any) -> None:
        names = {"tool": tool, "version": version}
        self._command_cls = type("Command", (ToolCommand,), names)
        kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
        super().__init__(cls=type("Group", (ToolGroup,), names), add_completion=False,
                         pretty_exceptions_enable=False, **kwargs)
        self.callback()(_root)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", self._command_cls)
        return super().command(*args, **kwargs)


def _root() -> None:
    """The tool itself takes only the shared options."""
