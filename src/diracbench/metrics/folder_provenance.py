"""`python -m diracbench.metrics.folder_provenance`: one provenance.json for a results folder.

results/tables/ and results/figures/ hold files made by many jobs; their provenance.json records
the git commit and dirty flag, package versions, the hash of the configuration, the seeds, and,
per file, its SHA-256 and what its own `<stem>.provenance.json` says (stage, settings hash,
device, seeds, inputs) — so a number or a curve can be traced without rerunning anything.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Sequence

from diracbench import cli
from diracbench.errors import UserError


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_record(files: Sequence[Path], config: dict) -> dict:
    from diracbench.provenance import git_state, package_versions, provenance_path, settings_hash

    entries = []
    devices = set()
    for path in sorted(set(Path(f) for f in files)):
        if not path.is_file():
            raise UserError(f"{path} does not exist; rerun the rule that makes it")
        entry: dict = {"file": str(path), "sha256": sha256(path), "bytes": path.stat().st_size}
        own = provenance_path(path)
        if own.is_file():
            try:
                rec = json.loads(own.read_text())
            except json.JSONDecodeError:
                raise UserError(f"{own} is not valid JSON; delete it and rerun the rule that makes {path}") from None
            for key in ("stage", "settings_hash", "device", "seeds", "inputs", "finished", "git"):
                if key in rec:
                    entry[key] = rec[key]
            if rec.get("device"):
                devices.add(str(rec["device"]))
        entries.append(entry)
    return {
        "git": git_state(),
        "packages": package_versions(),
        "config_hash": settings_hash(config),
        "seeds": {"root": config.get("seed")},
        "devices": sorted(devices),
        "files": entries,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.base_parser("python -m diracbench.metrics.folder_provenance", __doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="results/<folder>/provenance.json")
    args = parser.parse_args(argv)
    from diracbench.io import write_json

    record = folder_record(args.files, args.settings)
    record["folder"] = str(args.out.parent)
    write_json(args.out, record)
    print(f"wrote {args.out} ({len(record['files'])} files, config {record['config_hash']})", flush=True)


if __name__ == "__main__":
    cli.run(main, stage="diracbench.metrics.folder_provenance")
