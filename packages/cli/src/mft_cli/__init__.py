"""The command-line conventions every mft tool shares (mft-prep, mft-train, mft-eval, mft):

- `-h` and `--help`, `--version` (prints `<tool> <version>`) and `--debug` on the tool and on every subcommand;
- flags listed as flags (`--dry-run`, `--progress/--no-progress`), never with a `<bool>` type;
- an error prints one line `error: ...` on stderr and exits 1; the traceback only with `--debug` or `MFT_DEBUG=1`
  (click's usage errors keep exit status 2);
- a console that does not cut tables at 80 columns when the output is a file or a pipe;
- OpenMP threads that sleep instead of spinning while they wait (`OMP_WAIT_POLICY=PASSIVE`) unless the user set the
  variable: set before torch is loaded, which reads it once (`prefer_passive_openmp`).

Its own package so that the tools, which install independently, share one copy. It imports no torch.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

PIPE_WIDTH = 10_000  # columns of a console writing to a file or a pipe: long names and paths stay whole


def prefer_passive_openmp() -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user set it; True when it is in effect for this process.

    OpenMP reads the variable when torch loads its runtime, so this only works before the first `import torch`;
    with torch already loaded it changes nothing and returns False (unless the variable was set before).
    """
    if "torch" in sys.modules:
        return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"


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
        typer.echo(f"{ctx.command.tool} {ctx.command.version}")  # type: ignore[attr-defined]
        raise typer.Exit(0)


def _shared(
    debug: Annotated[bool, typer.Option("--debug", callback=_debug, expose_value=False, is_eager=True,
                                        help="show the traceback of an error (also MFT_DEBUG=1)")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, expose_value=False, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """The options every command gets (typer builds them from this signature)."""


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
    """A typer app with the conventions above: `ToolApp("mft-train", __version__, help=...)`."""

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
