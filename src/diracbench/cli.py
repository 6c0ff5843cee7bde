"""Shared command-line plumbing for the `python -m diracbench.<stage>` entry points.

Every stage takes its science parameters as `--settings` (a JSON string, or `@file` with JSON or
YAML) — exactly the config subset its Snakemake rule passes, so a rule's printed command can be
pasted into a shell to debug it — plus explicit input/output paths, `--threads` and `--device`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from diracbench.errors import UserError


def parse_settings(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise UserError(f"--settings {text}: no such file")
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise UserError(f"--settings {text}: not valid YAML/JSON ({err})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"--settings is not valid JSON ({err}); pass a JSON object or @path/to/settings.yaml") from None
    if not isinstance(data, dict):
        raise UserError("--settings must be a JSON/YAML mapping")
    return data


def parse_named_paths(items: list[str], option: str) -> dict[str, Path]:
    """`--option NAME=PATH` items -> {name: path} (outputs: the files need not exist yet)."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"{option} {item!r}: expected NAME=PATH")
        out[name] = Path(path)
    return out


def parse_inputs(items: list[str]) -> dict[str, Path]:
    """`--input NAME=PATH` items -> {name: path}; each file must exist."""
    out = parse_named_paths(items, "--input")
    for name, path in out.items():
        if not path.is_file():
            raise UserError(f"--input {name}={path}: no such file; run the rule that makes it first")
    return out


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--settings", type=parse_settings, default={}, help="JSON object or @file.yaml with the stage's parameters")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (a rule passes its `threads`)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return parser


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None, stage: str = "diracbench") -> None:
    """Run `main`, turning a UserError into one line on stderr and exit status 2."""
    try:
        main(argv)
    except UserError as err:
        print(f"{stage}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
