"""Entry point of one stage's process: `python -m mftcoder.stage_exec SPEC.json` (or under torchrun).

The runner writes the spec (tool, resolved config, base folder); this process validates the config with the tool's
schema and calls the tool's Python API. Keeping each stage in its own process isolates threads, memory and
distributed state between stages. An error prints one line `error: ...` (the runner quotes it), the traceback only
with MFT_DEBUG=1 (`mft --debug`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mft_cli import debug_enabled, error_line

from mftcoder.pipeline import PipelineError
from mftcoder.tools import get_tool


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mftcoder.stage_exec SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    tool = get_tool(spec["tool"])
    try:
        validated = tool.validate(spec["config"], Path(spec["base_dir"]))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        tool.run(validated)
    except Exception as exc:  # one line for the log and the runner's message; the traceback with MFT_DEBUG=1
        if debug_enabled():
            raise
        print(f"error: {error_line(exc)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
