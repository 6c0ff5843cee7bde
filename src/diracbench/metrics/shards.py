"""Scoring in whole scoring batches: shards of a method's images, resumable, and their gather.

`python -m diracbench.metrics` scores one batch of `batch_size` images at a time (LPIPS, VGG and
Inception features see exactly the batches of a whole run, see `evaluate.metric_batches`) and
keeps each finished batch in a partial folder, so a killed job resumes from its finished batches.
`--shard K/N` scores a contiguous run of whole batches into one shard file: the per-image values
and the per-image features the set-level metrics need (VGG for FD-VGG, Inception for FID), in
full precision. `--shards FILE...` gathers them: per_image.csv from all rows, FD-VGG and FID from
all features, bootstrap CIs from all rows with the run's seed; the same bytes as an unsharded run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from diracbench.errors import UserError
from diracbench.io import read_npz
from diracbench.metrics.evaluate import Scores

SHARD_FORMAT = "diracbench-metrics-shard-1"
SHARD_PRODUCER = "`python -m diracbench.metrics --shard K/N`"


def scores_to_arrays(scores: Scores) -> dict[str, np.ndarray]:
    out = {f"col__{k}": np.asarray(v) for k, v in scores.columns.items()}
    out["columns"] = np.array(list(scores.columns))
    out.update({f"feat__{k}": np.asarray(v) for k, v in scores.features.items()})
    out["notes"] = np.array(json.dumps(scores.notes, sort_keys=True))
    return out


def arrays_to_scores(arrays: dict[str, np.ndarray]) -> Scores:
    columns = {str(k): arrays[f"col__{k}"] for k in arrays["columns"]}
    features = {k[len("feat__"):]: v for k, v in arrays.items() if k.startswith("feat__")}
    return Scores(columns, features, json.loads(str(arrays["notes"])))


def settings_text(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def file_digest(*paths: Path) -> str:
    """What the shards scored: the content of the recon (or measurement) and operator files."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def shard_file_arrays(scores: Scores | None, start: int, stop: int, total: int, settings: dict, inputs: str) -> dict[str, np.ndarray]:
    arrays = scores_to_arrays(scores) if scores is not None and len(scores) else {}
    arrays.update({"format": np.array(SHARD_FORMAT), "images": np.array([start, stop, total], dtype=np.int64), "settings": np.array(settings_text(settings)), "inputs": np.array(inputs)})
    return arrays


def gather_scores(paths: list[Path], settings: dict) -> tuple[Scores, list[Path]]:
    """The shards' scores joined in image order; a missing, overlapping or foreign shard is a UserError."""
    shards = []
    for path in paths:
        a = read_npz(path, required=("format", "images", "settings", "inputs"), producer=SHARD_PRODUCER)
        if str(a["format"]) != SHARD_FORMAT:
            raise UserError(f"{path} is not a metrics shard ({SHARD_FORMAT}); rerun {SHARD_PRODUCER}")
        shards.append((path, a))
    shards.sort(key=lambda item: (int(item[1]["images"][0]), int(item[1]["images"][1])))
    want = settings_text(settings)
    for path, a in shards:
        if str(a["settings"]) != want:
            raise UserError(f"{path} was scored with other settings than these; rerun its metrics shard")
    if len({str(a["inputs"]) for _, a in shards}) != 1 or len({int(a["images"][2]) for _, a in shards}) != 1:
        raise UserError("the metrics shards scored different reconstructions (their inputs differ); rerun every metrics shard")
    total = int(shards[0][1]["images"][2])
    pos, parts = 0, []
    for path, a in shards:
        start, stop = int(a["images"][0]), int(a["images"][1])
        if start == stop:
            continue  # an empty shard (more shards than batches)
        if start != pos:
            raise UserError(f"{path} starts at image {start} but the shards before it end at {pos}: {'a metrics shard is missing' if start > pos else 'metrics shards overlap'}; rerun the missing shard")
        part = arrays_to_scores(a)
        if len(part) != stop - start:
            raise UserError(f"{path} holds {len(part)} images but claims {start}:{stop}; delete it and rerun its shard")
        parts.append(part)
        pos = stop
    if pos != total:
        raise UserError(f"the metrics shards cover images 0:{pos} of {total}; a shard is missing, rerun it")
    from diracbench.metrics.evaluate import join_scores

    return join_scores(parts), [p for p, _ in shards]
