"""Top eigenvalue and eigenvalue density of a symmetric operator by the Lanczos algorithm.

Lanczos (Lanczos 1950) builds, from a unit start vector q_1, an orthonormal basis q_1..q_k of the
Krylov space span{q_1, A q_1, ..., A^{k-1} q_1} in which A is the tridiagonal T_k
(diagonal alpha, off-diagonal beta). Its eigenvalues (Ritz values) theta_i approximate the extreme
eigenvalues of A first; the Ritz pair (theta_i, y_i) has residual ||A y_i - theta_i y_i|| =
beta_k |s_{k,i}| (s_i the eigenvectors of T_k), which bounds its distance to an eigenvalue of A.

Stochastic Lanczos quadrature (Golub & Welsch 1969; Lin, Saad & Yang 2016; used for neural networks
by Ghorbani, Krishnan & Xiao 2019 and Yao et al. 2020): for a random unit start vector q_1 with
E[q_1 q_1^T] = I/d, the spectral density phi(t) = (1/d) sum_j delta(t - lambda_j) satisfies
phi ~ sum_i tau_i delta(t - theta_i) with Gauss-quadrature weights tau_i = s_{1,i}^2, averaged over
independent runs and smoothed by a Gaussian kernel.

Full reorthogonalisation keeps the basis orthogonal in floating point, at k d memory per run. Runs
go side by side as rows of one block, so each pass over the data serves all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from landscape.batches import check_finite
from landscape.trace import rademacher

Matmat = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Spectrum:
    """Ritz values and quadrature weights of ``runs`` Lanczos runs of ``steps`` steps each.

    ``ritz_values`` and ``weights`` are (runs, steps); each row of weights sums to one.
    ``top_residual`` bounds the distance of ``top_eigenvalue`` to an eigenvalue of the operator.
    """

    ritz_values: np.ndarray
    weights: np.ndarray
    top_eigenvalue: float
    top_residual: float
    matvecs: int

    @property
    def steps(self) -> int:
        return self.ritz_values.shape[1]

    def density(self, grid: np.ndarray | None = None, sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(grid, phi): the SLQ density smoothed with a Gaussian of width ``sigma``.

        Defaults: sigma = 1% of the Ritz value range (at least 1e-8), a grid of 1000 points covering
        the Ritz values with 5 sigma to spare. phi integrates to one over the real line.
        """
        lo, hi = float(self.ritz_values.min()), float(self.ritz_values.max())
        sigma = sigma or max(0.01 * (hi - lo), 1e-8)
        grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, 1000) if grid is None else np.asarray(grid, float)
        z = (grid[:, None] - self.ritz_values.reshape(-1)[None, :]) / sigma
        kernel = np.exp(-0.5 * z**2) / (sigma * np.sqrt(2 * np.pi))
        phi = kernel @ self.weights.reshape(-1) / self.ritz_values.shape[0]
        return grid, phi


def _orthogonalise(w: Tensor, basis: Tensor) -> Tensor:
    """Remove from each row of w (runs, d) its components along that run's basis (j, runs, d), twice."""
    for _ in range(2):
        w = w - torch.einsum("jr,jrd->rd", torch.einsum("rd,jrd->jr", w, basis), basis)
    return w


def lanczos(matmat: Matmat, dim: int, steps: int, runs: int, generator: torch.Generator,
            dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Tridiagonalisations (alpha (runs, k), beta (runs, k)) of ``runs`` Lanczos runs, k = min(steps, dim).

    Start vectors are random signs normalised to unit length. ``beta[:, -1]`` is the norm of the
    final residual (zero when the Krylov space is exhausted). When a run's Krylov space closes early
    (beta ~ 0) it continues from a fresh random vector orthogonal to its basis, with beta = 0, so T
    becomes block diagonal and the new block gets zero quadrature weight, as it should.
    """
    k = min(steps, dim)
    basis = torch.zeros(k, runs, dim, dtype=dtype, device=device)
    q = rademacher(runs, dim, generator, dtype, device) / dim**0.5
    alpha, beta = np.zeros((runs, k)), np.zeros((runs, k))
    scale = torch.zeros(runs, dtype=torch.float64)
    for j in range(k):
        basis[j] = q
        w = matmat(q)
        alpha[:, j] = (w * q).sum(1).double().cpu().numpy()
        w = _orthogonalise(w, basis[: j + 1])
        norm = w.norm(dim=1)
        scale = torch.maximum(scale, (norm.double().cpu() + torch.from_numpy(np.abs(alpha[:, j]))))
        closed = (norm.double().cpu() <= 1e3 * torch.finfo(dtype).eps * scale).to(norm.device)
        beta[:, j] = torch.where(closed, torch.zeros_like(norm), norm).double().cpu().numpy()
        if j + 1 < k:
            if bool(closed.any()):
                fresh = _orthogonalise(rademacher(runs, dim, generator, dtype, device), basis[: j + 1])
                w = torch.where(closed[:, None], fresh, w)
            q = w / w.norm(dim=1, keepdim=True)
    return alpha, beta


def lanczos_spectrum(matmat: Matmat, dim: int, steps: int, runs: int, generator: torch.Generator,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Spectrum:
    """Top eigenvalue and SLQ density from ``runs`` Lanczos runs of ``min(steps, dim)`` products each (a
    Krylov space has at most ``dim`` dimensions); :attr:`Spectrum.steps` records the steps taken."""
    alpha, beta = lanczos(matmat, dim, steps, runs, generator, dtype, device)
    check_finite(float(np.abs(np.concatenate([alpha.ravel(), beta.ravel()])).max()), "the Hessian's Lanczos "
                 "coefficients")
    values, weights, residuals = [], [], []
    for a, b in zip(alpha, beta, strict=True):
        t = np.diag(a) + np.diag(b[:-1], 1) + np.diag(b[:-1], -1)
        theta, s = np.linalg.eigh(t)
        values.append(theta)
        weights.append(s[0] ** 2)
        residuals.append(np.abs(b[-1] * s[-1]))
    values_arr, residual_arr = np.array(values), np.array(residuals)
    run, idx = np.unravel_index(np.argmax(values_arr), values_arr.shape)
    return Spectrum(values_arr, np.array(weights), float(values_arr[run, idx]), float(residual_arr[run, idx]),
                    runs * alpha.shape[1])
