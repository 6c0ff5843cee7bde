"""The operator contract every method talks to.

A `LinearOperator` is one fixed degradation A acting on image batches (B, C, H, W) in [0, 1]:
`forward` (A x), `adjoint` (A* y) and, where an exact one exists, `svd()` — the pieces DDRM needs
(A = U diag(s) V^T with U, V applied as functions, never as dense matrices).

A degradation *family* {A_t, t in [0, 1]} (what Dirac needs) gives `apply(x, t)` with a scalar
severity or one severity per image, and `at(t)` for the fixed operator at one severity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class SpectralDecomposition(ABC):
    """A = U diag(s) V^T; coefficients live on an (C, H, W)-shaped spectral grid."""

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


class LinearOperator(ABC):
    """A fixed linear degradation on image batches (B, C, H, W)."""

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

    kind: str

    @abstractmethod
    def apply(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """A_t(x); `t` is a float or a tensor with one severity per image."""

    @abstractmethod
    def at(self, t: float) -> LinearOperator: ...

    @abstractmethod
    def to_dict(self) -> dict:
        """Every parameter needed to rebuild the family (written to operator.json)."""

    def measurement_operator(self) -> LinearOperator:
        return self.at(1.0)


def per_image(t: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """Severities as a float64 vector of length `batch`."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"expected one severity per image ({batch}), got shape {tuple(t.shape)}")
    return t
