"""The operator contract every method talks to.

A `LinearOperator` is one fixed degradation A acting on image batches (B, C, H, W) in [0, 1]:
`forward` (A x), `adjoint` (A* y), `svd()` (A = U diag(s) V^T with U, V applied as functions,
never as dense matrices; what DDRM needs), and the exact `normal_solve` / `data_prox` derived from
it. It declares `x_shape` and `y_shape` (C, H, W); they may differ in general, though every
operator here maps an image to a same-size image.

A degradation *family* {A_t, t in [0, 1]} (what Dirac needs) gives `apply(x, t)` with a scalar
severity or one severity per image, `at(t)` for the fixed operator at one severity, and declares
its severity parameter (`severity_parameter`, bound to its schedule as `severity`). A family is
built from its config section (`from_config`) or from operator.json's family dict
(`from_dict` / `to_dict`); `operators.registry` maps each kind to its family class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Callable, ClassVar

import torch

from diracbench.operators.severity import Severity, SeverityParameter, SeveritySchedule

# How a decomposition's singular values are structured, which decides how DDRM thresholds them.
ELEMENTWISE = "elementwise"  # one independent value per spectral coefficient
SEPARABLE = "separable"  # s = outer(s_rows, s_cols): thresholded factor by factor


class SpectralDecomposition(ABC):
    """A = U diag(s) V^T; coefficients live on an (C, H, W)-shaped spectral grid."""

    spectrum: ClassVar[str] = ELEMENTWISE

    @property
    @abstractmethod
    def singular_values(self) -> torch.Tensor:
        """Non-negative singular values, broadcastable to (C, H, W)."""

    @abstractmethod
    def Vt(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def V(self, z: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def Ut(self, y: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def U(self, z: torch.Tensor) -> torch.Tensor: ...

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A x rebuilt from the pieces (used to check them against `forward`)."""
        return self.U(self.singular_values * self.Vt(x))

    def thresholded(self, threshold: float) -> torch.Tensor:
        """Singular values with those below `threshold` set to exactly 0 ("no information")."""
        s = self.singular_values
        return torch.where(s >= threshold, s, torch.zeros_like(s))


class LinearOperator(ABC):
    """A fixed linear degradation on image batches (B, C, H, W)."""

    @property
    @abstractmethod
    def x_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of an input image."""

    @property
    @abstractmethod
    def y_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a measurement."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def svd(self) -> SpectralDecomposition: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def response_to_ones(self, like: torch.Tensor) -> torch.Tensor:
        """A(1): what a constant-one image becomes; needed for exact range conversions."""
        return self.forward(torch.ones_like(like[:1]))

    def normal_solve(self, b: torch.Tensor, rho: float | torch.Tensor, c: float = 1.0) -> torch.Tensor:
        """x with (c A^T A + rho I) x = b, exactly and per image (rho: a scalar, or one value
        per image shaped (B, 1, 1, 1)). From the SVD: V diag(1 / (c s^2 + rho)) V^T b, which
        needs V square and orthogonal (true of every operator here)."""
        svd = self.svd()
        s = svd.singular_values.to(b.dtype)
        return svd.V(svd.Vt(b) / (c * s * s + rho))

    def data_prox(self, z: torch.Tensor, y: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        """prox of gamma * 1/2 ||y - A x||^2 at z: argmin_x 1/2 ||y - A x||^2 + ||x - z||^2 / (2 gamma)."""
        inv = 1.0 / gamma
        return self.normal_solve(self.adjoint(y) + inv * z, inv)


class DegradationFamily(ABC):
    """{A_t}: severity 0 is (almost) clean, severity 1 is the measurement's degradation."""

    kind: ClassVar[str]
    severity_parameter: ClassVar[SeverityParameter]
    # A small valid config section of this kind (what the contract tests build every kind from).
    example_config: ClassVar[dict]
    image_size: tuple[int, int]
    channels: int

    @abstractmethod
    def apply(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """A_t(x); `t` is a float or a tensor with one severity per image."""

    @abstractmethod
    def at(self, t: float) -> LinearOperator: ...

    @abstractmethod
    def to_dict(self) -> dict:
        """Every parameter needed to rebuild the family (written to operator.json)."""

    def _setup(self, image_size: tuple[int, int], device: torch.device | str, dtype: torch.dtype, cache_size: int, channels: int) -> None:
        """What every family keeps: geometry, where its operators live, and their cache."""
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.device = torch.device(device)
        self.dtype = dtype
        self.channels = int(channels)
        self._cache = OperatorCache(cache_size)

    @classmethod
    @abstractmethod
    def from_config(
        cls,
        cfg: dict,
        image_size: int | tuple[int, int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        channels: int = 3,
    ) -> "DegradationFamily":
        """The family of a config section `tasks.<task>.operator`, with the linear severity rule."""

    @classmethod
    @abstractmethod
    def from_dict(
        cls,
        spec: dict,
        device: torch.device | str = "cpu",
        severity: SeveritySchedule | None = None,
        channels: int = 3,
    ) -> "DegradationFamily":
        """The family of operator.json's family dict; `severity` replaces its stored schedule."""

    @property
    def severity(self) -> Severity:
        return Severity(self.severity_parameter, getattr(self, self.severity_parameter.name))

    @property
    def x_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    @property
    def y_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    def transition(self, t: float, t_next: float) -> LinearOperator | None:
        """G with A_{t_next} = G A_t for t <= t_next, where the family is nested and knows G;
        None makes no claim."""
        return None

    def measurement_operator(self) -> LinearOperator:
        return self.at(1.0)


class OperatorCache:
    """Fixed operators of one family by severity, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self._ops: OrderedDict[float, LinearOperator] = OrderedDict()
        self._size = size

    def get(self, t: float, build: Callable[[float], LinearOperator]) -> LinearOperator:
        key = round(float(t), 12)
        op = self._ops.get(key)
        if op is None:
            with torch.inference_mode(False):  # cached: must stay usable by autograd (guidance)
                op = build(key)
            self._ops[key] = op
            if len(self._ops) > self._size:
                self._ops.popitem(last=False)
        else:
            self._ops.move_to_end(key)
        return op


def per_image(t: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """Severities as a float64 vector of length `batch`."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"expected one severity per image ({batch}), got shape {tuple(t.shape)}")
    return t


def image_hw(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(H, W) from a config's square `image_size` or an explicit pair."""
    if isinstance(image_size, (tuple, list)):
        return (int(image_size[0]), int(image_size[1]))
    return (int(image_size), int(image_size))
