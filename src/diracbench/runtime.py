"""Threads and devices: a rule's `threads:` drives torch's intra-op pool, nothing more."""

from __future__ import annotations

import os
import platform
import sys
from typing import TYPE_CHECKING

from diracbench.errors import UserError

if TYPE_CHECKING:
    import torch

_configured = False


def configure_threads(threads: int) -> None:
    """Use exactly `threads` CPU threads for torch and the BLAS/OpenMP pools.

    Stages that never import torch (figures, tables) only set the environment, which torch
    would read at import; importing torch here would cost them a second of start-up.
    """
    global _configured
    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" not in sys.modules:
        return
    import torch

    torch.set_num_threads(threads)
    if not _configured:
        try:
            torch.set_num_interop_threads(1)  # inter-op parallelism would oversubscribe the cores
        except RuntimeError:
            pass  # already started parallel work in this process
        _configured = True


DEVICE_CHOICES = ("auto", "cuda", "cpu")


def resolve_device(name: str = "auto") -> "torch.device":
    """The torch device a stage runs on; asking for CUDA that is not usable fails at once.

    'auto' picks CUDA when it is usable and the CPU otherwise (with a warning on stderr when a
    driver is installed but CUDA still fails, the case that silently burns a GPU job's walltime).
    'cuda' / 'cuda:N' never fall back: when CUDA is not usable, a UserError (one line, exit 2, before
    any output is written) names the reason: a CPU-only torch build, no NVIDIA driver or no device
    visible, a driver too old for the CUDA version this torch was built with, or the CUDA error.
    """
    import torch

    name = str(name).strip()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        problem = cuda_problem()
        if problem is not None and _driver_cuda_version() is not None:
            print(f"warning: --device auto runs on the CPU because CUDA is not usable: {problem}", file=sys.stderr, flush=True)
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise UserError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    problem = cuda_problem()
    if problem is not None:
        raise UserError(f"--device {name} was requested but {problem} (to run on the CPU instead, set `device: cpu` or `auto` in the config)")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise UserError(f"--device {name} was requested but only {count} CUDA device(s) are visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use cuda:0..cuda:{count - 1}")
    return dev


def _driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed NVIDIA driver supports, or None without a driver.

    Asked from libcuda itself (cuDriverGetVersion), which works even when torch's CUDA runtime
    cannot start, so the error can say which side is too old.
    """
    import ctypes

    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
            return version.value // 1000, (version.value % 1000) // 10
    return None


def _parse_version(text: str | None) -> tuple[int, int] | None:
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def explain_cuda_failure(torch_version: str, build_cuda: str | None, driver_cuda: tuple[int, int] | None, device_count: int, init_error: str | None) -> str | None:
    """Why CUDA is not usable, as one clause; None when it is. Pure, so every case is testable
    without the hardware that produces it."""
    if build_cuda is None:
        return (f"this torch build ({torch_version}) has no CUDA support; install a CUDA build of the same version, "
                f"e.g. pip install torch=={torch_version.split('+')[0]} --index-url https://download.pytorch.org/whl/cu126")
    build = _parse_version(build_cuda)
    if driver_cuda is None:
        return f"no CUDA device is visible: no NVIDIA driver is installed on {platform.node()} (libcuda cannot be loaded); run the job on a GPU node"
    if build is not None and driver_cuda[0] < build[0]:
        # Within one major version, CUDA's minor-version compatibility lets newer runtimes run on
        # older drivers; across major versions it never does.
        return (f"the NVIDIA driver on {platform.node()} supports CUDA up to {driver_cuda[0]}.{driver_cuda[1]}, older than the CUDA {build_cuda} "
                f"this torch ({torch_version}) was built for; install the torch=={torch_version.split('+')[0]} build for CUDA <= {driver_cuda[0]}.{driver_cuda[1]} "
                f"(https://download.pytorch.org/whl/cuXYZ, see the README) or update the driver")
    if init_error:
        first = init_error.strip().splitlines()[0] if init_error.strip() else init_error
        low = first.lower()
        if "too old" in low or "insufficient" in low:
            return (f"the NVIDIA driver on {platform.node()} (CUDA {driver_cuda[0]}.{driver_cuda[1]}) is too old for this torch build "
                    f"(CUDA {build_cuda}): {first}; install a torch build for an older CUDA or update the driver")
        if "no cuda-capable device" in low or "no cuda gpus" in low:
            return f"no CUDA device is visible on {platform.node()} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); request a GPU for the job"
        return f"CUDA failed to initialise (torch {torch_version}, CUDA {build_cuda}, driver CUDA {driver_cuda[0]}.{driver_cuda[1]}): {first}"
    if device_count == 0:
        return f"no CUDA device is visible on {platform.node()} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); request a GPU for the job"
    return None


def cuda_problem() -> str | None:
    """None when torch can use CUDA here, else the reason as one clause."""
    import torch

    init_error = None
    count = 0
    if torch.version.cuda is not None:
        try:
            torch.cuda.init()  # raises with the driver's own message where is_available() only says False
            count = torch.cuda.device_count()
        except Exception as err:  # RuntimeError / AssertionError / torch's CUDA errors
            init_error = f"{type(err).__name__}: {err}"
    if init_error is None and count > 0:
        return None
    return explain_cuda_failure(torch.__version__, torch.version.cuda, _driver_cuda_version(), count, init_error)


def device_description(device: "torch.device") -> str:
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()} threads"
