"""Curvature of a checkpoint's training loss: Hessian trace, top eigenvalue and eigenvalue density.

The Hessian is that of the mean cross-entropy over N training samples (a seeded subset, 2048 by
default, or all of them), with the model in eval mode (BatchNorm running statistics, no dropout).
For a sparse checkpoint the default subspace is ``mask``: the Hessian restricted to the unpruned
coordinates (its principal submatrix; random probes are zero on pruned weights), whose trace is the
curvature the sparse network can feel; ``full`` takes all coordinates, as PyHessian does.

- trace: Hutch++ (Meyer et al. 2021; the default) or Hutchinson (1989), :mod:`landscape.trace`, with a
  standard error and optional early stop at a target relative standard error;
- top eigenvalue: Lanczos stopped at a relative residual (``eigen_tol``), reporting the true residual;
  density: stochastic Lanczos quadrature; :mod:`landscape.spectrum`;
- products: :mod:`landscape.hvp` (one gradient graph per batch shared by all probes);
- ``backend="pyhessian"`` also runs the ``pyhessian`` package as a cross-check,
  :mod:`landscape.tools.pyhessian_backend`.

Library: :func:`hessian_analysis` (model + batches), :func:`analyse_checkpoint`, :func:`analyse_run`;
the command line is :mod:`landscape.tools.hessian` (``python -m landscape.hessian CKPT`` or ``--run DIR``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from core.artifacts.checkpoint import Checkpoint, build_model, load_checkpoint
from core.data import Dataset, subsample_indices
from core.errors import UserError
from core.options import option
from core.seeds import check_seed, derive_seed
from landscape.curvature import HessianOperator
from landscape.hvp import Batch, trainable_parameters
from landscape.spectrum import Eigenvalue, Spectrum
from landscape.tools.artifacts import checkpoint_data, run_checkpoints
from landscape.tools.cli import MAX_LANCZOS_RUNS, MAX_PROBES
from landscape.tools.pyhessian_backend import PyHessianTrace, pyhessian_trace
from landscape.trace import ESTIMATORS, METHOD_ALIASES, TraceEstimate, estimator_name

EVAL_MODE = "eval (BatchNorm running statistics, dropout off)"
LOSS = "mean cross-entropy over the samples"
def _samples_of_flag(text: str) -> int | None:
    samples = text.strip().lower()
    if samples != "all" and not samples.isdigit():
        raise UserError(f"--samples must be a positive number or 'all', not {text!r}")
    return None if samples == "all" else int(samples)


def _flag_of_samples(samples: int | None) -> str:
    return "all" if samples is None else str(samples)


def _progress_of_flag(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


@dataclass(frozen=True)
class HessianOptions:
    """What to estimate and how: each field is a flag of ``python -m landscape.hessian`` and its help
    says what it means. ``samples`` None: all training samples. ``subspace`` None: ``mask`` when the
    checkpoint has masks, else ``full``. ``probes`` is the matrix-vector product budget of the trace (the
    maximum when ``target_rse`` is set). Lanczos takes at most one step per coordinate of the (sub)space,
    so ``lanczos_steps`` beyond it are not taken (the spectrum records the steps taken), and at most
    :attr:`MAX_LANCZOS_STEPS`, as every step keeps a vector of the space's size. ``progress`` is off in
    the library; the command line's default is on a terminal only."""

    MAX_LANCZOS_STEPS: ClassVar[int] = 10_000

    method: str = option("hutchpp", "trace estimator: hutchpp reaches a given standard error with several times "
                         "fewer products on trained networks; auto (with --target-rse) picks hutchinson or "
                         "hutchpp for the target from a first block of probes", choices=(*ESTIMATORS, *METHOD_ALIASES),
                         to_field=estimator_name)
    probes: int = option(64, "Hessian-vector products for the trace; the maximum with --target-rse", metavar="K")
    samples: int | None = option(2048, "seeded subset of N training samples, or 'all'", metavar="N",
                                 to_field=_samples_of_flag, to_flag=_flag_of_samples)
    batch_size: int = option(512, "samples per batch", metavar="B")
    subspace: str | None = option(None, "mask: unpruned coordinates only; full: all coordinates, as PyHessian",
                                  choices=("mask", "full"),
                                  default_text="mask when the checkpoint has masks, else full")
    per_layer: bool = option(False, "split the trace into per-parameter parts")
    top_eigen: bool = option(False, "top eigenvalue (Lanczos, stopped at --eigen-tol)")
    density: bool = option(False, "eigenvalue density (stochastic Lanczos quadrature)")
    lanczos_steps: int = option(64, "Lanczos steps (of --density; the most for --top-eigen)", metavar="M")
    lanczos_runs: int = option(1, "independent Lanczos runs averaged in the density", metavar="R")
    target_rse: float | None = option(None, "stop once the relative standard error is at most R, e.g. 0.02",
                                      metavar="R", default_text="none, all --probes")
    backend: str = option("native", "pyhessian: also run the pyhessian package with the same probe count, as a "
                          "check", choices=("native", "pyhessian"))
    seed: int = option(0, "seed of the sample subset, probes and Lanczos")
    progress: bool = option(False, "progress bars", flag_default=None, default_text="only on a terminal",
                            to_field=_progress_of_flag)
    eigen_tol: float = option(1e-3, "with --top-eigen: stop once the residual ||H y - theta y|| is at most R times "
                              "the eigenvalue theta; 0: all --lanczos-steps", metavar="R")

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first bad option."""
        checks = [
            (estimator_name(self.method) is not None, f"--method must be one of {', '.join(ESTIMATORS)} (or hutch++)"),
            (self.probes >= 2, "--probes must be >= 2 (one product gives no standard error)"),
            (self.samples is None or self.samples >= 1, "--samples must be a positive number or 'all'"),
            (self.batch_size >= 1, "--batch-size must be positive"),
            (self.subspace in (None, "mask", "full"), "--subspace must be mask or full"),
            (self.lanczos_steps >= 1 and self.lanczos_runs >= 1, "--lanczos-steps and --lanczos-runs must be >= 1"),
            (self.lanczos_steps <= self.MAX_LANCZOS_STEPS,
             f"--lanczos-steps must be at most {self.MAX_LANCZOS_STEPS:,} (each step keeps one vector per run; "
             "Lanczos needs far fewer for the top eigenvalue and the density)"),
            (self.probes <= MAX_PROBES, f"--probes must be at most {MAX_PROBES:,} (each probe is a vector of every "
             "weight, all held at once)"),
            (self.lanczos_runs <= MAX_LANCZOS_RUNS, f"--lanczos-runs must be at most {MAX_LANCZOS_RUNS:,}"),
            (self.target_rse is None or self.target_rse > 0, "--target-rse must be positive"),
            (0 <= self.eigen_tol < math.inf, "--eigen-tol must be a finite number >= 0"),
            (estimator_name(self.method) != "auto" or self.target_rse is not None,
             "--method auto chooses the estimator for a target: give --target-rse R (e.g. 0.02)"),
            (self.backend in ("native", "pyhessian"), "--backend must be native or pyhessian"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        check_seed(self.seed)


@dataclass(frozen=True)
class HessianResult:
    """Estimates for one model; ``dim`` is the number of coordinates of the (sub)space. ``top_eigenvalue``: the
    converging Lanczos run of ``top_eigen``, else the top Ritz value of the density's runs (or None)."""

    options: HessianOptions
    samples: int
    subspace: str
    dim: int
    trace: TraceEstimate
    spectrum: Spectrum | None = None
    pyhessian: PyHessianTrace | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    top: Eigenvalue | None = None

    @property
    def top_eigenvalue(self) -> Eigenvalue | None:
        if self.top is not None or self.spectrum is None:
            return self.top
        s = self.spectrum
        return Eigenvalue(s.top_eigenvalue, s.top_residual, s.matvecs, steps=s.steps)


def sample_indices(available: int, samples: int | None, seed: int) -> Tensor | None:
    """A seeded subset of ``samples`` of ``available`` training indices; None for all of them."""
    g = torch.Generator().manual_seed(derive_seed(seed, "hessian_samples"))
    return None if samples is None else subsample_indices(available, samples, g)


def hessian_analysis(model: nn.Module, batches: Sequence[Batch], masks: Mapping[str, Tensor] | None = None,
                     options: HessianOptions = HessianOptions()) -> HessianResult:
    """Trace (and optionally spectrum and PyHessian cross-check) of the Hessian of the mean
    cross-entropy over all samples in ``batches``, for ``model`` in eval mode: the options of the CLI
    over :class:`landscape.curvature.HessianOperator`."""
    options.validate()
    subspace = options.subspace or ("mask" if masks else "full")
    params = trainable_parameters(model)
    if not params:
        raise UserError("the model has no trainable parameters")
    masks = {k: v for k, v in (masks or {}).items() if k in params}  # frozen parameters have no curvature here
    op = HessianOperator(model, batches, masks=masks if subspace == "mask" else None, progress=options.progress)
    seconds = {}
    start = time.perf_counter()
    trace = op.trace(options.method, options.probes, per_layer=options.per_layer, target_rse=options.target_rse,
                     seed=torch.Generator().manual_seed(derive_seed(options.seed, "hessian_probes")))
    seconds["trace"] = time.perf_counter() - start
    spectrum = top = None
    if options.top_eigen:
        start = time.perf_counter()
        top = op.top_eigenvalue(options.lanczos_steps, tol=options.eigen_tol,
                                seed=torch.Generator().manual_seed(derive_seed(options.seed, "hessian_lanczos")))
        seconds["top_eigenvalue"] = time.perf_counter() - start
    if options.density:
        start = time.perf_counter()
        spectrum = op.spectrum(options.lanczos_steps, options.lanczos_runs,
                               seed=torch.Generator().manual_seed(derive_seed(options.seed, "hessian_lanczos")))
        seconds["spectrum"] = time.perf_counter() - start
    reference = None
    if options.backend == "pyhessian":
        start = time.perf_counter()
        reference = pyhessian_trace(model, batches, trace.matvecs, options.seed,
                                    masks if subspace == "mask" else None, options.top_eigen)
        seconds["pyhessian"] = time.perf_counter() - start
    return HessianResult(options, op.samples, subspace, op.dim, trace, spectrum, reference, seconds, top)


@dataclass(frozen=True)
class HessianReport:
    """A :class:`HessianResult` for a checkpoint file."""

    checkpoint: str
    kind: str
    cycle: int | None
    particle: int | None
    density: float
    result: HessianResult

    def to_json(self) -> dict[str, Any]:
        """The keys of docs/format.md section 4, plus everything else that was computed."""
        r, t = self.result, self.result.trace
        obj: dict[str, Any] = {
            "checkpoint": self.checkpoint, "method": t.method, "probes": t.matvecs, "samples": r.samples,
            "subspace": r.subspace, "trace": t.estimate, "stderr": t.stderr, "per_layer": t.per_layer,
            "per_layer_stderr": t.per_layer_stderr, "relative_stderr": t.relative_stderr,
            "interval": list(t.interval()), "per_layer_interval": {k: list(t.interval(layer=k)) for k in t.per_layer},
            "method_requested": estimator_name(r.options.method), "probes_requested": r.options.probes,
            "target_rse": r.options.target_rse, "dim": r.dim,
            "kind": self.kind, "cycle": self.cycle, "particle": self.particle, "density": self.density,
            "sparsity": 1.0 - self.density, "mode": EVAL_MODE, "loss": LOSS, "batch_size": r.options.batch_size,
            "seed": r.options.seed, "backend": r.options.backend, "terms": list(t.samples), "seconds": r.seconds,
        }
        top = r.top_eigenvalue
        if top is not None:
            obj["top_eigenvalue"] = {"value": top.value, "residual": top.residual, "matvecs": top.matvecs,
                                     "steps": top.steps}
            if r.top is not None:
                obj["top_eigenvalue"] |= {"converged": top.converged, "tol": r.options.eigen_tol}
        if r.spectrum is not None:
            s = r.spectrum
            if r.options.density:
                grid, phi = s.density()
                obj["density_estimate"] = {"steps": s.steps, "runs": r.options.lanczos_runs,
                                           "ritz_values": s.ritz_values.tolist(), "weights": s.weights.tolist(),
                                           "grid": grid.tolist(), "density": phi.tolist()}
        if r.pyhessian is not None:
            p = r.pyhessian
            obj["pyhessian"] = {"trace": p.estimate, "stderr": p.stderr, "probes": len(p.samples),
                                "terms": list(p.samples), "top_eigenvalue": p.top_eigenvalue}
        return _finite(obj)


def _finite(obj: Any) -> Any:
    """NaN and infinities become JSON null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def training_batches(dataset: Dataset, options: HessianOptions) -> list[Batch]:
    """The (seeded subset of the) training split in batches, without augmentation."""
    idx = sample_indices(dataset.size("train"), options.samples, options.seed)
    return list(dataset.eval_batches("train", options.batch_size, idx))


def analyse_checkpoint(ckpt: Checkpoint | str | Path, options: HessianOptions = HessianOptions(),
                       device: torch.device | str = "cpu", data_dir: str | None = None, *,
                       trust_code: bool = False) -> HessianReport:
    """Rebuild model and training data from a checkpoint and analyse its Hessian. The data are read and
    cached under ``data_dir`` (None: ``data`` in the working directory), never where the checkpoint says.
    ``trust_code`` (``--trust-code``) allows the ``PACKAGE.MODULE:CALLABLE`` model or data set a checkpoint
    names (a checkpoint loaded with ``trust_code=True`` has it already)."""
    ckpt = ckpt if isinstance(ckpt, Checkpoint) else load_checkpoint(ckpt, trust_code=trust_code)
    options.validate()
    trust = trust_code or None  # None: the trust the checkpoint was loaded with
    model = build_model(ckpt, device, trust_code=trust)
    dataset = checkpoint_data(ckpt, device, data_dir, trust_code=trust)
    masks = {k: v.to(device) for k, v in ckpt.masks.items()}
    result = hessian_analysis(model, training_batches(dataset, options), masks, options)
    return HessianReport(ckpt.path, ckpt.kind, ckpt.cycle, ckpt.particle, ckpt.density, result)


def analyse_run(run: str | Path, options: HessianOptions = HessianOptions(), device: torch.device | str = "cpu",
                particles: bool = False, data_dir: str | None = None, *, trust_code: bool = False,
                load: Callable[[Path], Checkpoint] | None = None) -> list[HessianReport]:
    """:func:`analyse_checkpoint` for every cycle's average (and particles) of a run; ``load`` opens each
    checkpoint file (default: :func:`analyse_checkpoint` loads it, with ``trust_code``)."""
    return [analyse_checkpoint(load(path) if load else path, options, device, data_dir, trust_code=trust_code)
            for path in run_checkpoints(run, particles)]
