"""The ``twelvefactor`` command. Each sub-command lives in its own module under
``twelvefactor.commands`` and is imported only when used, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # the shell's code for a process ended by SIGPIPE
# name -> (module under twelvefactor.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prompt": ("prompt", "render an agent's prompt for a thread exactly as the LLM receives it"),
    "eval": ("eval", "score an agent's prompt on its eval cases (or a replayed thread) against a model"),
    "invoke": ("invoke", "run a function of template.yaml in-process on an event file (no Docker)"),
    "local": ("local", "run the whole application on this machine: `twelvefactor local up`"),
    "threads": ("threads", "launch, list, show and answer threads over the REST API"),
    "console": ("console", "threads in a browser: timeline, exact requests, approve, cancel, launch"),
    "new": ("new", "scaffold a new agent: `twelvefactor new agent NAME`"),
    "demo": ("demo", "deploybot end to end on the local stack (what `make demo` runs)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="twelvefactor", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    if not args or args[0] not in COMMANDS:
        parser.parse_args(args)  # prints usage or the "invalid choice" error and exits
        return 2
    module = importlib.import_module(f"twelvefactor.commands.{COMMANDS[args[0]][0]}")
    sub = argparse.ArgumentParser(prog=f"twelvefactor {args[0]}", description=COMMANDS[args[0]][1])
    module.configure(sub)
    parsed = sub.parse_args(args[1:])
    try:
        result: int = parsed.run(parsed)
    except BrokenPipeError:
        # The reader went away (`twelvefactor threads launch ... --follow | head -1`): stop quietly,
        # as a process killed by SIGPIPE would, with what is still buffered sent nowhere rather than
        # failing again when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return result


if __name__ == "__main__":
    sys.exit(main())
