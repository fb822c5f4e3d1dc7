"""The ``hetfedlora`` command (installed by ``pip install .``): one word for each ``python -m`` entry point.

    hetfedlora run ...      = python -m orchestrator.run ...     (one federated run)
    hetfedlora sweep ...    = python -m sweeps.run ...           (a sweep on Ray Tune)
    hetfedlora report ...   = python -m analysis.report ...      (tables, figures and report.md of a folder)
    hetfedlora presets      = python -m sweeps.run --list-presets, with each preset's first comment line
    hetfedlora presets NAME   prints the preset's YAML

Every argument after the subcommand goes to that entry point unchanged (``hetfedlora run --help`` is the
run's own help). The entry points are imported only when called, so ``hetfedlora presets`` starts fast.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": ("orchestrator.run", "one federated run (python -m orchestrator.run)"),
    "sweep": ("sweeps.run", "a sweep of runs on Ray Tune (python -m sweeps.run)"),
    "report": ("analysis.report", "report.md, comparison tables and figures of a sweep or run folder "
                                  "(python -m analysis.report)"),
    "presets": ("", "list the built-in sweeps; 'presets NAME' prints one"),
}


def usage() -> str:
    """The command's help text."""
    width = max(len(c) for c in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    return (f"usage: hetfedlora {{{','.join(COMMANDS)}}} [ARGS ...]\n\n"
            f"Heterogeneous federated LoRA experiments on Ray.\n\ncommands:\n{rows}\n\n"
            "'hetfedlora COMMAND --help' shows the options of a command.")


def presets(argv: list[str]) -> int:
    """``presets``: every preset with the first line of its description; ``presets NAME``: its YAML."""
    from sweeps.spec import SweepSpecError, available_presets, preset_path

    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: hetfedlora presets [NAME]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv:
        try:
            print(preset_path(argv[0]).read_text(), end="")
        except SweepSpecError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    names = available_presets()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {_first_comment(preset_path(name).read_text())}".rstrip())
    return 0


def _first_comment(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``hetfedlora COMMAND ARGS`` to the command's entry point; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose one of {list(COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return 2
    if command == "presets":
        return presets(rest)
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
