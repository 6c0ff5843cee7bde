"""Atomic result files: a result either exists complete or not at all.

Every writer goes to a temporary file in the destination folder and renames it into place
only after the content is fully written, so an interrupted or failed stage never leaves a
half-written file that a later run (or Snakemake) could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from diracbench.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_beside(final: Path) -> Path:
    """A temp file in the destination folder (same filesystem, so the final rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + "".join(final.suffixes[-1:]), dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results should be readable
    return Path(tmp)


def _disk_full(err: BaseException, folder: Path) -> bool:
    """Did this write fail because the filesystem (or the user's quota) is full?"""
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    # torch.save ("iostream error", "unexpected pos") and numpy's tofile ("N requested and M
    # written") report a short write without an errno; it is a full disk when the filesystem
    # has no room left at that moment (the partial file still holds it).
    if isinstance(err, (OSError, RuntimeError)):
        try:
            st = os.statvfs(folder)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < (1 << 20)
    return False


def _no_space(final: Path) -> UserError:
    return UserError(f"no space left on device while writing {final}; free space in {final.parent} (or quota) and rerun")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    tmp_path = _temp_beside(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as err:
        if _disk_full(err, path.parent):
            raise _no_space(path) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


class OutputSet:
    """Several outputs committed together: all renamed into place at the end, or none.

    with OutputSet() as out:
        np.save(out.path("a.npy"), ...)
        out.write_text("b.csv", ...)
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, final: str | Path) -> Path:
        final = Path(final)
        tmp = _temp_beside(final)
        self._pending.append((tmp, final))
        return tmp

    def write_text(self, final: str | Path, text: str) -> None:
        self.path(final).write_text(text)

    def write_npz(self, final: str | Path, **arrays: Any) -> None:
        """An uncompressed .npz of named arrays (what read_npz loads)."""
        with open(self.path(final), "wb") as fh:
            np.savez(fh, **arrays)

    def write_yaml(self, final: str | Path, data: Any) -> None:
        """YAML with sorted keys; numpy scalars and arrays as plain numbers and lists."""
        import yaml

        self.write_text(final, yaml.safe_dump(plain(data), sort_keys=True))

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for tmp, final in self._pending:
                    os.replace(tmp, final)
            elif self._pending and _disk_full(exc, self._pending[-1][1].parent):
                # The file being written when the disk filled is the last one asked for.
                raise _no_space(self._pending[-1][1]) from None
        finally:
            for tmp, _ in self._pending:
                tmp.unlink(missing_ok=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def plain(obj: Any) -> Any:
    """numpy scalars -> builtins (recursively through dicts, lists and tuples), so YAML stays readable."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def read_npz(path: str | Path, required: tuple[str, ...] = (), producer: str = "the rule that makes it") -> dict[str, np.ndarray]:
    """Load a whole .npz with errors that name the file and how to remake it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run {producer} first")
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except Exception as err:  # zipfile/pickle/ValueError: a truncated or foreign file
        raise UserError(f"{path} is not a readable .npz file ({err.__class__.__name__}: {err}); delete it and rerun {producer}") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise UserError(f"{path} lacks the arrays {missing}; it was not written by {producer} — delete it and rerun")
    return out


def read_json(path: str | Path, producer: str = "the rule that makes it") -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run {producer} first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); delete it and rerun {producer}") from None


def read_yaml(path: str | Path, producer: str = "the rule that makes it") -> Any:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run {producer} first")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err}); delete it and rerun {producer}") from None
