"""The Hessian of any PyTorch model's mean loss as a linear operator, and estimators built on it.

For parameters theta (those with ``requires_grad``) and N samples in batches b of n_b samples,

    L(theta) = (1/N) sum_b n_b * loss_fn(f_theta(x_b), y_b),        H = nabla^2_theta L(theta),

with the model in eval mode (BatchNorm running statistics, dropout off) and ``loss_fn`` the mean over
its batch (default: cross-entropy), so H is that of the mean over all samples whatever the batch sizes
(:mod:`landscape.batches`). :class:`HessianOperator` multiplies with H by double backward (Pearlmutter
1994), one forward pass and one gradient graph per batch shared by all vectors of a block
(:func:`landscape.hvp.hessian_matmat`). With ``masks`` it is the principal submatrix of H on the
unpruned coordinates, P^T H P.

- :func:`hessian_trace`: tr H by Hutchinson (1989) or Hutch++ (Meyer et al. 2021), or whichever of them
  reaches a target relative standard error with fewer products (``auto``), with a standard error;
- :func:`top_eigenvalue`: the largest eigenvalue by Lanczos (1950), stopped at a relative residual, with
  the true residual as its error bound;
- :meth:`HessianOperator.to_scipy`: a SciPy ``LinearOperator`` for ``scipy.sparse.linalg.eigsh`` and friends.

The caller's model is never modified: the operator works on a private eval-mode copy, taken when it is
built (later changes to the model do not reach it), on the device of the model's parameters.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from landscape.curvature import HessianOperator, hessian_trace
    >>> _ = torch.manual_seed(0)
    >>> model, X, y = nn.Linear(3, 2), torch.randn(32, 3), torch.randint(0, 2, (32,))
    >>> est = hessian_trace(model, (X, y), probes=16)
    >>> est.method, est.matvecs, est.estimate > 0
    ('hutchinson', 16, True)
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.batches import MAX_LANCZOS_RUNS, MAX_PROBES, ArgumentError, Batch, LossFn, check_finite, check_model
from landscape.batches import batches as make_batches
from landscape.hvp import Subspace, hessian_matmat, make_subspace, trainable_parameters
from landscape.spectrum import Eigenvalue, Spectrum, lanczos_spectrum, lanczos_top_eigenpair
from landscape.trace import ESTIMATORS, TraceEstimate, estimator_name

if TYPE_CHECKING:
    from scipy.sparse.linalg import LinearOperator

Seed = int | torch.Generator


def _generator(seed: Seed, name: str = "seed") -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an integer or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(int(seed))


def _count(value: Any, name: str, minimum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ArgumentError(f"{name} must be >= {minimum}{why}, got {value}")
    return int(value)


def _check_tol(tol: Any) -> float:
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 <= tol < float("inf"):
        raise ArgumentError(f"tol must be a finite number >= 0, got {tol!r}")
    return float(tol)


def _check_trace_options(method: Any, probes: Any, target_rse: Any) -> str:
    """The estimator's name in :data:`ESTIMATORS` (``hutch++`` is ``hutchpp``), after checking the options."""
    name = estimator_name(method)
    if name is None:
        raise ArgumentError(f"method must be one of {', '.join(ESTIMATORS)} (or hutch++), got {method!r}")
    _count(probes, "probes", 2, " (one product gives no standard error)")
    if probes > MAX_PROBES:
        raise ArgumentError(f"probes must be at most {MAX_PROBES:,} (each is a vector of every weight), got {probes:,}")
    if target_rse is not None and (isinstance(target_rse, bool) or not isinstance(target_rse, numbers.Real)
                                   or not target_rse > 0):
        raise ArgumentError(f"target_rse must be a positive number or None, got {target_rse!r}")
    if name == "auto" and target_rse is None:
        raise ArgumentError("method 'auto' chooses the estimator for a target_rse: give target_rse "
                            "(e.g. 0.02), or choose hutchinson or hutchpp")
    return name


def checked_masks(model: nn.Module, masks: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """``masks`` restricted to the trainable parameters, after checking names, shapes and 0/1 values.

    Masks of frozen parameters are dropped (the Hessian is not taken over them).
    """
    if masks is None:
        return {}
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping of parameter name -> 0/1 tensor, got {type(masks).__name__}")
    named = dict(model.named_parameters())
    out = {}
    for name, mask in masks.items():
        if name not in named:
            raise ArgumentError(f"masks has no parameter {name!r} of model: its keys must be names from "
                             "model.named_parameters()")
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask {name!r} must be a tensor, got {type(mask).__name__}")
        if mask.shape != named[name].shape:
            raise ArgumentError(f"mask {name!r} has shape {tuple(mask.shape)}, "
                                f"the parameter {tuple(named[name].shape)}")
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ArgumentError(f"mask {name!r} must hold only 0 and 1")
        if named[name].requires_grad:
            out[name] = mask
    return out


class HessianOperator:
    """The Hessian H of the mean loss of ``model`` over ``data``, as a symmetric linear operator.

    Vectors live in the flattened trainable parameters (``model.named_parameters()`` order, each
    parameter flattened), or with ``masks`` in their unpruned coordinates only, where the operator is
    the principal submatrix of H. Products:

    - ``op @ v``, ``op.matvec(v)``: H v for a 1-D tensor of length :attr:`dim`;
    - ``op @ V``: H V for columns V (dim, k);
    - ``op.matmat(V)``: for **rows** V (k, dim), V H (the convention of :mod:`landscape.trace` and
      :mod:`landscape.spectrum`); one pass over the data for all k rows, so blocks are cheaper than
      k separate products;
    - :meth:`to_scipy`: a ``scipy.sparse.linalg.LinearOperator`` (float64 NumPy in and out).

    Inputs are converted to :attr:`dtype` on :attr:`device`; results come back there.

    Args:
        model: any ``nn.Module``; the Hessian is over its parameters that require gradients. A private
            eval-mode copy is taken now (eval-mode BatchNorm is folded into adjacent convolutions for
            cheaper second derivatives); the model itself, its buffers and its train/eval mode are
            never changed.
        data: a DataLoader, a list of ``(inputs, targets)`` batches or an ``(X, y)`` pair of tensors
            (:mod:`landscape.batches`). It is read once, when the operator is built, and kept as a list
            of batches on the model's device (every product runs over all of them).
        loss_fn: ``loss_fn(outputs, targets)`` -> the mean loss of a batch as a scalar tensor (as torch
            losses default to). None: mean cross-entropy of class logits, in the model's dtype.
        masks: parameter name -> 0/1 tensor of its shape; restricts H to the coordinates where it is 1.
        batch_size: batch size for an ``(X, y)`` pair (default 1000).
        progress: a progress bar over the batches of each product.

    Raises:
        TypeError, ValueError (:class:`landscape.batches.ArgumentError`),
        naming the argument.

    Example (for a linear model and the mean squared error, H = (2/N) A^T A with A = [X, 1]):
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> model, X, y = nn.Linear(3, 1), torch.randn(20, 3), torch.randn(20, 1)
        >>> op = HessianOperator(model, (X, y), loss_fn=nn.MSELoss())
        >>> op.shape, op.layers
        ((4, 4), {'weight': slice(0, 3, None), 'bias': slice(3, 4, None)})
        >>> A, v = torch.cat([X, torch.ones(20, 1)], 1), torch.randn(4)
        >>> torch.allclose(op @ v, 2 / 20 * A.T @ (A @ v), atol=1e-5)
        True
        >>> from scipy.sparse.linalg import eigsh
        >>> top = eigsh(op.to_scipy(), k=1, return_eigenvectors=False)[0]
        >>> bool(abs(top - torch.linalg.eigvalsh(2 / 20 * A.T @ A)[-1]) < 1e-4)
        True
    """

    def __init__(self, model: nn.Module, data: Any, *, loss_fn: LossFn | None = None,
                 masks: Mapping[str, Tensor] | None = None, batch_size: int | None = None,
                 progress: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
        check_model(model)
        params = trainable_parameters(model)
        if not params:
            raise ArgumentError("model has no trainable parameters (none requires grad)")
        first = next(iter(params.values()))
        self.dtype, self.device = first.dtype, first.device
        self.subspace: Subspace = make_subspace(params, checked_masks(model, masks))
        self.batches: list[Batch] = list(make_batches(data, batch_size, "data", self.device))
        if not self.batches:
            raise ArgumentError("data is empty: it yielded no batch")
        self.samples = sum(len(y) for _, y in self.batches)
        if self.samples == 0:
            raise ArgumentError("data is empty: its batches hold no samples")
        self._matmat = hessian_matmat(model, self.batches, self.subspace, progress, loss_fn)

    @property
    def dim(self) -> int:
        """Number of coordinates (kept coordinates with masks)."""
        return self.subspace.dim

    @property
    def shape(self) -> tuple[int, int]:
        return self.dim, self.dim

    @property
    def layers(self) -> dict[str, slice]:
        """Each trainable parameter's slice of a vector."""
        return self.subspace.layers

    def __repr__(self) -> str:
        return (f"HessianOperator(dim={self.dim}, samples={self.samples}, batches={len(self.batches)}, "
                f"dtype={self.dtype}, device={self.device})")

    def _as_input(self, v: Any, name: str, dims: int) -> Tensor:
        if not isinstance(v, Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(v).__name__}")
        size_ok = v.dim() == dims and v.shape[-1 if dims == 2 else 0] == self.dim
        if not size_ok:
            want = f"(k, {self.dim})" if dims == 2 else f"({self.dim},)"
            raise ArgumentError(f"{name} must have shape {want} (op.dim = {self.dim}), got {tuple(v.shape)}")
        return v.to(device=self.device, dtype=self.dtype)

    def matmat(self, rows: Tensor) -> Tensor:
        """V H for a block of row vectors V (k, dim): one pass over the data for all k of them.

        >>> import torch
        >>> from torch import nn
        >>> op = HessianOperator(nn.Linear(2, 1), (torch.randn(8, 2), torch.randn(8, 1)), loss_fn=nn.MSELoss())
        >>> op.matmat(torch.eye(3)).shape
        torch.Size([3, 3])
        """
        return self._matmat(self._as_input(rows, "rows", 2))

    def matvec(self, v: Tensor) -> Tensor:
        """H v for a 1-D tensor v of length :attr:`dim`.

        >>> import torch
        >>> from torch import nn
        >>> op = HessianOperator(nn.Linear(2, 1), (torch.randn(8, 2), torch.randn(8, 1)), loss_fn=nn.MSELoss())
        >>> op.matvec(torch.ones(3)).shape
        torch.Size([3])
        """
        return self._matmat(self._as_input(v, "v", 1)[None])[0]

    def __matmul__(self, other: Tensor) -> Tensor:
        if isinstance(other, Tensor) and other.dim() == 2:
            return self.matmat(other.T).T
        return self.matvec(other)

    def to_scipy(self) -> LinearOperator:
        """This operator as a ``scipy.sparse.linalg.LinearOperator`` of float64 NumPy arrays.

        For a float32 model, pass ARPACK a tolerance above float32 rounding, e.g.
        ``eigsh(op.to_scipy(), k=1, tol=1e-5)``.

        >>> import torch
        >>> from torch import nn
        >>> op = HessianOperator(nn.Linear(2, 1), (torch.randn(8, 2), torch.randn(8, 1)), loss_fn=nn.MSELoss())
        >>> lin = op.to_scipy()
        >>> lin.shape, lin.dtype, lin.matvec(np.ones(3)).dtype
        ((3, 3), dtype('float64'), dtype('float64'))
        """

        def matmat(x: np.ndarray) -> np.ndarray:  # columns (dim, k), as SciPy passes them
            rows = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float64).T))
            return self.matmat(rows).T.double().cpu().numpy()

        def matvec(x: np.ndarray) -> np.ndarray:
            return matmat(np.reshape(x, (-1, 1)))[:, 0]

        from scipy.sparse.linalg import LinearOperator  # imported here: SciPy is needed only for this

        return LinearOperator(self.shape, matvec=matvec, rmatvec=matvec, matmat=matmat, rmatmat=matmat,
                              dtype=np.float64)

    def trace(self, method: str = "hutchinson", probes: int = 64, *, seed: Seed = 0, per_layer: bool = False,
              target_rse: float | None = None) -> TraceEstimate:
        """Randomised estimate of tr H (see :func:`hessian_trace`; ``seed`` may be a ``torch.Generator``).

        >>> import torch
        >>> from torch import nn
        >>> X = torch.randn(8, 2)
        >>> op = HessianOperator(nn.Linear(2, 1), (X, torch.randn(8, 1)), loss_fn=nn.MSELoss())
        >>> exact = 2 / 8 * float((X**2).sum() + 8)  # tr (2/N) A^T A, A = [X, 1]
        >>> abs(op.trace("hutchpp", probes=9).estimate - exact) < 1e-5  # exact once 3 * dim probes
        True
        """
        method = _check_trace_options(method, probes, target_rse)
        result = ESTIMATORS[method](self.matmat, self.dim, probes, _generator(seed),
                                    layers=self.layers if per_layer else None, target_rse=target_rse,
                                    dtype=self.dtype, device=self.device)
        check_finite(result.estimate, "the Hessian trace estimate")
        check_finite(result.stderr, f"the trace's standard error of {result.matvecs} products",
                     "give more probes (Hutch++ spends a third of them on its sketch)")
        return result

    def spectrum(self, steps: int = 64, runs: int = 1, *, seed: Seed = 0) -> Spectrum:
        """Ritz values and stochastic Lanczos quadrature weights (:func:`landscape.spectrum.lanczos_spectrum`)
        from ``runs`` Lanczos runs of ``min(steps, dim)`` products each.

        >>> import torch
        >>> from torch import nn
        >>> op = HessianOperator(nn.Linear(2, 1), (torch.randn(8, 2), torch.randn(8, 1)), loss_fn=nn.MSELoss())
        >>> op.spectrum(steps=10, runs=2).ritz_values.shape  # at most dim = 3 steps
        (2, 3)
        """
        _count(steps, "steps", 1)
        _count(runs, "runs", 1)
        if runs > MAX_LANCZOS_RUNS:
            raise ArgumentError(f"runs must be at most {MAX_LANCZOS_RUNS:,}, got {runs:,}")
        return lanczos_spectrum(self.matmat, self.dim, steps, runs, _generator(seed), self.dtype, self.device)

    def top_eigenvalue(self, steps: int = 100, *, seed: Seed = 0, tol: float = 1e-3) -> Eigenvalue:
        """The largest eigenvalue of H by Lanczos, stopped once its residual is at most ``tol`` times it, after at
        most ``min(steps, dim)`` steps (:func:`landscape.spectrum.lanczos_top_eigenpair`; see :func:`top_eigenvalue`).

        >>> import torch
        >>> from torch import nn
        >>> X = torch.randn(8, 2, dtype=torch.float64)  # float64: no rounding of the products to speak of
        >>> op = HessianOperator(nn.Linear(2, 1).double(), (X, torch.randn(8, 1).double()), loss_fn=nn.MSELoss())
        >>> A = torch.cat([X, torch.ones(8, 1)], 1)
        >>> top = op.top_eigenvalue()
        >>> abs(top.value - float(torch.linalg.eigvalsh(2 / 8 * A.T @ A)[-1])) < 1e-12, top.converged
        (True, True)
        """
        _count(steps, "steps", 1)
        top = lanczos_top_eigenpair(self.matmat, self.dim, _generator(seed), tol=_check_tol(tol), max_steps=steps,
                                    dtype=self.dtype, device=self.device)
        check_finite(top.value, "the Hessian's top eigenvalue")
        return top


def hessian_trace(model: nn.Module, data: Any, *, loss_fn: LossFn | None = None, method: str = "hutchinson",
                  probes: int = 64, masks: Mapping[str, Tensor] | None = None, seed: int = 0, per_layer: bool = False,
                  target_rse: float | None = None, batch_size: int | None = None,
                  progress: bool = False) -> TraceEstimate:
    """Estimate tr H, H the Hessian of the mean loss of ``model`` over ``data`` (see :class:`HessianOperator`).

    - ``hutchinson`` (Hutchinson 1989): tr H ~ (1/K) sum_k v_k^T H v_k with Rademacher v_k
      (i.i.d. signs, E[v v^T] = I, so E[v^T H v] = tr H); standard error = sample std / sqrt(K).
    - ``hutchpp`` (Meyer, Musco, Musco & Woodruff 2021): the exact trace on a sketched top subspace
      plus Hutchinson on the rest, error O(1/K) instead of O(1/sqrt(K)) for a decaying spectrum, and
      exact once probes >= 3 dim; with ``target_rse`` the sketch grows in blocks of 8 while that is
      predicted to save products (:func:`landscape.trace.hutchpp_trace`). On trained networks' Hessians,
      whose few outlier eigenvalues carry most of the Hutchinson variance, it reached a relative standard
      error of 2% with 6x (MNIST-1D cnn1d) to 20x (resnet20) fewer products than Hutchinson
      (docs/performance.md): the command line's default.
    - ``auto`` (needs ``target_rse``): a pilot block of 8 Hutchinson probes estimates how many probes
      Hutchinson needs, n_H = s^2 / (target_rse * |estimate|)^2 (s^2 the terms' sample variance); it goes
      on with Hutchinson (at least 16 probes) when n_H is at most what Hutch++ spends at the least (32
      products, the pilot reused as its first sketch block), else it is adaptive ``hutchpp`` to the bit
      (:func:`landscape.trace.auto_trace`). The result's ``method`` names the one chosen.

    All spend exactly ``probes`` Hessian-vector products (at most, with ``target_rse``), drawn from
    ``torch.Generator().manual_seed(seed)`` on the CPU, so a seed gives the same probes on every device.
    All probes of a block share one pass over the data (one forward and gradient graph per batch).

    Args:
        model, data, loss_fn, masks, batch_size, progress: as for :class:`HessianOperator`.
        method: ``hutchinson``, ``hutchpp`` (also spelt ``hutch++``, as the paper does) or ``auto``.
        probes: the budget of Hessian-vector products (>= 1; ``hutchpp`` sketches probes // 3 of them, none
            below 3).
        seed: seed of the random probes.
        per_layer: also estimate each parameter's diagonal block trace tr(P_l H); the parts sum to the total.
        target_rse: stop early once stderr / |estimate| <= target_rse (checked every 16 probes for
            ``hutchinson``, every 8 for ``hutchpp``; ``auto`` plans its blocks from the spread so far).

    Returns:
        A frozen :class:`landscape.trace.TraceEstimate`: ``estimate``, ``stderr`` (NaN when it cannot be
        estimated), ``matvecs``, ``method``, ``per_layer`` and ``per_layer_stderr`` (empty unless
        ``per_layer``), the Hutchinson terms ``samples``, ``interval()`` (a Student-t confidence interval,
        which keeps its coverage at a few dozen probes where estimate -+ 1.96 stderr does not) and
        ``to_json()``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> model, X, y = nn.Linear(3, 1), torch.randn(50, 3), torch.randn(50, 1)
        >>> exact = 2 / 50 * float((X**2).sum() + 50)   # MSE of a linear model: tr (2/N) [X 1]^T [X 1]
        >>> est = hessian_trace(model, (X, y), loss_fn=nn.MSELoss(), probes=400, seed=1)
        >>> abs(est.estimate - exact) < 3 * est.stderr
        True
        >>> sorted(hessian_trace(model, (X, y), loss_fn=nn.MSELoss(), probes=8, per_layer=True).per_layer)
        ['bias', 'weight']
        >>> loose, tight = (hessian_trace(model, (X, y), loss_fn=nn.MSELoss(), method="auto", target_rse=r,
        ...                               probes=1000) for r in (0.1, 0.01))
        >>> loose.method, loose.matvecs, loose.interval()[0] < exact < loose.interval()[1]
        ('hutchinson', 16, True)
        >>> tight.method, abs(tight.estimate - exact) < 1e-4  # a 4-dimensional Hessian: the sketch covers it
        ('hutchpp', True)
    """
    _check_trace_options(method, probes, target_rse)  # before the data are read
    op = HessianOperator(model, data, loss_fn=loss_fn, masks=masks, batch_size=batch_size, progress=progress)
    return op.trace(method, probes, seed=_generator(seed), per_layer=per_layer, target_rse=target_rse)


def top_eigenvalue(model: nn.Module, data: Any, *, loss_fn: LossFn | None = None,
                   masks: Mapping[str, Tensor] | None = None, steps: int = 100, seed: int = 0,
                   batch_size: int | None = None, progress: bool = False, tol: float = 1e-3) -> Eigenvalue:
    """The largest eigenvalue of H (see :class:`HessianOperator`) by Lanczos (Lanczos 1950), with an error bound.

    Lanczos from a random-sign start vector (seeded by ``seed``), with full reorthogonalisation, one
    Hessian-vector product per step. After step k the top Ritz pair (theta, y) of the tridiagonal T_k has
    the residual ||H y - theta y|| = |beta_k s_k| in exact arithmetic (Parlett 1998; Saad 2011); Lanczos stops
    at the first step where it is at most ``tol * |theta|``, or after ``min(steps, dim)`` steps. One more
    product then gives the true residual r = ||H y - rho y|| (unit y as stored, rho = y^T H y, accumulated in
    float64), which is what is reported: some eigenvalue of H lies within r of ``value`` (Weyl/Krylov-Bogoliubov;
    the Kato-Temple bound r^2 / gap is sharper but needs the unknown gap, so it is not reported), the largest
    one unless the start vector had little weight along its eigenvector and a loose ``tol`` stopped at a lower
    eigenvalue first (``value`` never exceeds the largest eigenvalue). ``converged`` says whether
    r <= tol * |value|; if rounding keeps r above the estimate, Lanczos continues and checks again (one
    product per check), up to ``steps``. r is the residual of the products as computed in the model's dtype:
    against the exact Hessian add their rounding, about eps ||H|| (1e-7 relative in float32).

    For the same relative tolerance this needs several times fewer products than PyHessian's power iteration
    (Yao et al. 2020), whose ``tol`` bounds only the change of the estimate between iterations
    (docs/performance.md, top eigenvalue).

    Args:
        model, data, loss_fn, masks, batch_size, progress: as for :class:`HessianOperator`.
        steps: the most Lanczos steps (>= 1), one Hessian-vector product each.
        seed: seed of the start vector.
        tol: relative residual at which to stop (>= 0; 0 takes all ``min(steps, dim)`` steps).

    Returns:
        A frozen :class:`Eigenvalue`: ``value``, ``residual`` (the true residual r), ``matvecs`` (all
        products), ``steps``, ``converged`` and the unit eigenvector estimate ``vector``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> model, X, y = nn.Linear(3, 1), torch.randn(50, 3), torch.randn(50, 1)
        >>> A = torch.cat([X, torch.ones(50, 1)], 1).double()  # the exact value in float64
        >>> top = top_eigenvalue(model, (X, y), loss_fn=nn.MSELoss())
        >>> abs(top.value - float(torch.linalg.eigvalsh(2 / 50 * A.T @ A)[-1])) <= top.residual, top.converged
        (True, True)
        >>> top.steps <= 4, top.matvecs == top.steps + 1  # at most dim = 4 steps, and one product for r
        (True, True)
    """
    _count(steps, "steps", 1)
    _check_tol(tol)
    op = HessianOperator(model, data, loss_fn=loss_fn, masks=masks, batch_size=batch_size, progress=progress)
    return op.top_eigenvalue(steps, seed=seed, tol=tol)
