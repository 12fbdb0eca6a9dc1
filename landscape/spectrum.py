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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Eigenvalue:
    """An extreme eigenvalue estimate: ``value`` is within ``residual`` of an eigenvalue of the operator.

    ``residual`` = ||A y - value y|| for the unit Ritz vector ``vector`` y (float64; None when not kept),
    computed with a product of its own (:func:`lanczos_top_eigenpair`). ``matvecs`` counts every product,
    ``steps`` the Lanczos steps among them; ``converged``: the residual met the requested tolerance.
    """

    value: float
    residual: float
    matvecs: int
    converged: bool = False
    steps: int = 0
    vector: Tensor | None = field(default=None, repr=False, compare=False)


def _orthogonalise(w: Tensor, basis: Tensor) -> Tensor:
    """Remove from each row of w (runs, d) its components along that run's basis (j, runs, d), twice."""
    for _ in range(2):
        w = w - torch.einsum("jr,jrd->rd", torch.einsum("rd,jrd->jr", w, basis), basis)
    return w


def _lanczos_steps(matmat: Matmat, dim: int, steps: int, runs: int, generator: torch.Generator,
                   dtype: torch.dtype, device: torch.device | str) -> Iterator[tuple[Tensor, np.ndarray, np.ndarray]]:
    """After each of k = min(steps, dim) Lanczos steps j (one product each), yield (basis (j, runs, dim),
    alpha (runs, j), beta (runs, j)) so far; a caller that stops iterating spends no further product.

    The basis grows by doubling, so a run that stops early holds only about the vectors it used.
    """
    k = min(steps, dim)
    basis = torch.zeros(min(k, 16), runs, dim, dtype=dtype, device=device)
    q = rademacher(runs, dim, generator, dtype, device) / dim**0.5
    alpha, beta = np.zeros((runs, k)), np.zeros((runs, k))
    scale = torch.zeros(runs, dtype=torch.float64)
    for j in range(k):
        if j == len(basis):
            basis = torch.cat([basis, torch.zeros(min(j, k - j), runs, dim, dtype=dtype, device=device)])
        basis[j] = q
        w = matmat(q)
        alpha[:, j] = (w * q).sum(1).double().cpu().numpy()
        w = _orthogonalise(w, basis[: j + 1])
        norm = w.norm(dim=1)
        scale = torch.maximum(scale, (norm.double().cpu() + torch.from_numpy(np.abs(alpha[:, j]))))
        closed = (norm.double().cpu() <= 1e3 * torch.finfo(dtype).eps * scale).to(norm.device)
        beta[:, j] = torch.where(closed, torch.zeros_like(norm), norm).double().cpu().numpy()
        yield basis[: j + 1], alpha[:, : j + 1], beta[:, : j + 1]
        if j + 1 < k:
            if bool(closed.any()):
                fresh = _orthogonalise(rademacher(runs, dim, generator, dtype, device), basis[: j + 1])
                w = torch.where(closed[:, None], fresh, w)
            q = w / w.norm(dim=1, keepdim=True)


def lanczos(matmat: Matmat, dim: int, steps: int, runs: int, generator: torch.Generator,
            dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Tridiagonalisations (alpha (runs, k), beta (runs, k)) of ``runs`` Lanczos runs, k = min(steps, dim).

    Start vectors are random signs normalised to unit length. ``beta[:, -1]`` is the norm of the
    final residual (zero when the Krylov space is exhausted). When a run's Krylov space closes early
    (beta ~ 0) it continues from a fresh random vector orthogonal to its basis, with beta = 0, so T
    becomes block diagonal and the new block gets zero quadrature weight, as it should. All k steps
    are taken; :func:`lanczos_top_eigenpair` stops once the top eigenvalue has converged.

    >>> a = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    >>> alpha, beta = lanczos(lambda q: q @ a, 5, 8, 2, torch.Generator().manual_seed(0), torch.float64)
    >>> alpha.shape, bool(abs(beta[:, -1]).max() < 1e-12)  # 5 steps span R^5: nothing is left over
    ((2, 5), True)
    """
    *_, (_, alpha, beta) = _lanczos_steps(matmat, dim, steps, runs, generator, dtype, device)
    return alpha.copy(), beta.copy()


def _top_ritz_pair(alpha: np.ndarray, beta: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(theta, s, |beta_k s_k|): the largest eigenvalue of T_k, its unit eigenvector and Parlett's bound."""
    t = np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)
    theta, s = np.linalg.eigh(t)
    return float(theta[-1]), s[:, -1], float(abs(beta[-1] * s[-1, -1]))


def lanczos_top_eigenpair(matmat: Matmat, dim: int, generator: torch.Generator, *, tol: float = 1e-3,
                          max_steps: int = 100, dtype: torch.dtype = torch.float32,
                          device: torch.device | str = "cpu") -> Eigenvalue:
    """The largest eigenvalue of a symmetric operator by Lanczos, stopped once its residual is small.

    After step k the top Ritz pair (theta, y = Q_k s) of T_k has, in exact arithmetic, the residual
    ||A y - theta y|| = |beta_k s_k| (Parlett 1998, section 13.2; Saad 2011, Numerical Methods for Large
    Eigenvalue Problems, Prop. 6.8): no product is needed to watch it. Lanczos (1950) stops at the first
    step where this estimate is at most ``tol * |theta|``, or after ``min(max_steps, dim)`` steps. With
    full reorthogonalisation the estimate stays close to the truth in floating point, but it can fall
    far below the rounding of the products (to 1e-30 in float32), so it is not what is reported: one more
    product gives the true residual r = ||A y - rho y|| / ||y|| of the Ritz vector y as stored (in
    ``dtype``), with the Rayleigh quotient rho = y^T A y / y^T y, both accumulated in float64. If r misses
    the tolerance (rounding), Lanczos continues and checks again later, one product per check.

    The reported bound is r itself: for any unit y, some eigenvalue lambda of A has |rho - lambda| <= r
    (Krylov-Bogoliubov/Weyl; Parlett 1998, Theorem 4.5.1). If the gap delta between rho and the rest of
    the spectrum were known, Kato-Temple would give the sharper |rho - lambda| <= r^2 / delta, typically
    far smaller; delta is not known (the next Ritz value only estimates it), so it is not reported.
    The Ritz value never exceeds the largest eigenvalue and rises with every step (Cauchy interlacing),
    so lambda is the largest one unless the start vector has little weight along its eigenvector: then a
    loose ``tol`` can stop at a lower eigenvalue that converged first (as power iteration can). The
    product with y is taken in ``dtype``, so r also carries that product's rounding error (about eps ||A||).

    Args:
        matmat: rows V (k, dim) -> V A, for a symmetric A.
        dim: the operator's dimension; a Krylov space has at most ``dim`` dimensions.
        generator: draws the random-sign start vector.
        tol: relative tolerance on the residual; 0 takes all ``min(max_steps, dim)`` steps (converged only if
            r = 0).
        max_steps: the most Lanczos steps (each one product, and one stored vector of ``dim``).
        dtype, device: of the vectors.

    Returns:
        :class:`Eigenvalue`: ``value`` rho, ``residual`` r, ``matvecs`` (steps plus residual checks),
        ``steps``, ``converged`` (r <= tol * |rho|) and the unit ``vector`` y (float64).

    Example (a clear gap: a few steps find 10 of a 100 x 100 diagonal):
        >>> a = torch.diag(torch.cat([torch.tensor([10.0]), torch.linspace(0, 1, 99)]))
        >>> top = lanczos_top_eigenpair(lambda v: v @ a, 100, torch.Generator().manual_seed(0), tol=1e-4)
        >>> top.converged, top.steps < 20, abs(top.value - 10) <= top.residual <= 1e-4 * 10
        (True, True, True)
    """
    if not tol >= 0 or max_steps < 1:
        raise ValueError(f"tol must be >= 0 and max_steps >= 1, got {tol} and {max_steps}")
    k = min(max_steps, dim)
    checks, next_check = 0, 1
    for basis, alpha, beta in _lanczos_steps(matmat, dim, k, 1, generator, dtype, device):
        j = alpha.shape[1]
        theta, s, estimate = _top_ritz_pair(alpha[0], beta[0])
        if j < k and (tol == 0 or j < next_check or estimate > tol * abs(theta)):
            continue
        y = torch.zeros(dim, dtype=torch.float64, device=device)
        for i in range(j):  # one float64 vector at a time, not a float64 copy of the basis
            y += float(s[i]) * basis[i, 0].double()
        y = y.to(dtype)
        y64 = y.double()
        norm = y64.norm()
        ay = matmat(y[None])[0].double() / norm
        y64 = y64 / norm
        checks += 1
        rho = float(y64 @ ay)
        residual = float((ay - rho * y64).norm())
        converged = residual <= tol * abs(rho)
        if converged or j == k:
            return Eigenvalue(rho, residual, j + checks, converged, j, y64)
        next_check = j + max(1, j // 2)  # rounding holds r above the estimate: check less often
    raise AssertionError("unreachable: the last step returns")


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
