"""Command line, text tables, JSON and figures of ``python -m landscape.hessian``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from core.errors import ArgumentParser
from core.options import add_dataclass_arguments
from landscape.tools.cli import add_io_arguments
from landscape.tools.hessian_report import HessianOptions, HessianReport, HessianResult
from landscape.tools.plots import checkpoint_label, label_figure, legend_below, panel_grid, readable_axes
from landscape.trace import TraceEstimate, estimator_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m landscape.hessian",
        description="Hutchinson / Hutch++ trace, top eigenvalue and eigenvalue density of the Hessian of the "
                    "mean training cross-entropy of a checkpoint (model in eval mode), or of every cycle of a run.")
    parser.add_argument("checkpoint", nargs="?", default=None, metavar="CKPT", help="a .safetensors checkpoint")
    parser.add_argument("--run", default=None, metavar="DIR", help="every cycle's average.safetensors of a run")
    parser.add_argument("--particles", action="store_true", help="with --run: the particles too")
    add_dataclass_arguments(parser, HessianOptions)
    add_io_arguments(parser)
    return parser


def _pm(value: float, err: float) -> str:
    return f"{value:.6g} +- {err:.3g}" if np.isfinite(err) else f"{value:.6g}"


def _chosen(result: HessianResult) -> str:
    return ", chosen by --method auto" if estimator_name(result.options.method) == "auto" else ""


def format_report(report: HessianReport) -> str:
    """A few lines: what was measured, the trace, the optional parts, spectrum and cross-check."""
    r, t = report.result, report.result.trace
    lines = [f"checkpoint: {report.checkpoint} ({report.kind}, density {report.density:.4f})",
             f"Hessian of the mean cross-entropy over {r.samples} train samples, model in eval mode; "
             f"subspace {r.subspace} ({r.dim} coordinates)",
             f"trace ({t.method}{_chosen(r)}, {t.matvecs} products): {_pm(t.estimate, t.stderr)}"
             f" (relative stderr {t.relative_stderr:.3g}; {r.seconds['trace']:.2f} s)"]
    if t.per_layer:
        width = max(len(n) for n in t.per_layer)
        lines += [f"  {name:<{width}}  {_pm(v, t.per_layer_stderr[name])}" for name, v in t.per_layer.items()]
    if r.top is not None:
        e = r.top
        state = "converged" if e.converged else f"not converged to {r.options.eigen_tol:g}"
        lines.append(f"top eigenvalue (Lanczos, {e.steps} steps, {e.matvecs} products, {state}): {e.value:.6g} "
                     f"(true residual {e.residual:.2g}, which bounds its error; {r.seconds['top_eigenvalue']:.2f} s)")
    elif r.spectrum is not None:
        s = r.spectrum
        lines.append(f"top eigenvalue (Lanczos, {s.steps} steps): {s.top_eigenvalue:.6g} "
                     f"(residual estimate {s.top_residual:.2g})")
    if r.pyhessian is not None:
        p = r.pyhessian
        gap = abs(t.estimate - p.estimate) / np.hypot(t.stderr, p.stderr)
        lines.append(f"pyhessian trace ({len(p.samples)} probes, {r.seconds['pyhessian']:.2f} s): "
                     f"{_pm(p.estimate, p.stderr)}; difference {gap:.2f} combined standard errors")
        if p.top_eigenvalue is not None:
            lines.append(f"pyhessian top eigenvalue (power iteration): {p.top_eigenvalue:.6g}")
    return "\n".join(lines)


def format_run(reports: Sequence[HessianReport]) -> str:
    """One row per checkpoint: cycle, kind, sparsity, trace, standard error."""
    rows = [f"{'cycle':>5} {'kind':<8} {'particle':>8} {'sparsity':>8} {'trace':>12} {'stderr':>10}"
            + (f" {'top eig':>10}" if reports and reports[0].result.top_eigenvalue else "")]
    for rep in reports:
        t = rep.result.trace
        part = "-" if rep.particle is None else str(rep.particle)
        row = (f"{rep.cycle if rep.cycle is not None else '-':>5} {rep.kind:<8} {part:>8} "
               f"{1 - rep.density:>8.4f} {t.estimate:>12.5g} {t.stderr:>10.3g}")
        if rep.result.top_eigenvalue is not None:
            row += f" {rep.result.top_eigenvalue.value:>10.5g}"
        rows.append(row)
    return "\n".join(rows)


def _describe(report: HessianReport) -> str:
    """``run/cycle_01/average (average, cycle 1, density 0.8000)``."""
    parts = [report.kind, *([f"cycle {report.cycle}"] if report.cycle is not None else []),
             *([f"particle {report.particle}"] if report.particle is not None else [])]
    return f"{checkpoint_label(report.checkpoint)} ({', '.join(parts)}, density {report.density:.4f})"


def _caption(result: HessianResult, dim: bool = True) -> str:
    coordinates = f" ({result.dim} coordinates)" if dim else ""
    return (f"Hessian of the mean train cross-entropy over {result.samples} samples, model in eval mode; "
            f"subspace {result.subspace}{coordinates}; {ESTIMATOR_NAMES.get(result.trace.method, result.trace.method)} "
            "trace estimate.")


ESTIMATOR_NAMES = {"hutchpp": "Hutch++ (Meyer et al. 2021)", "hutchinson": "Hutchinson (1989)"}
DENSITY_FLOOR = 1e-6  # SLQ densities fall to ~0 between eigenvalue clusters: drawn from 1e-6 of the peak up


def _trace_axis(t: TraceEstimate) -> tuple[str, str, str]:
    """x label, panel title and caption sentence of the running trace estimate, per estimator."""
    if t.method == "hutchpp":
        low_rank = t.matvecs - len(t.samples)
        return (f"residual probes (random vectors; {len(t.samples)} of the {t.matvecs} products, "
                f"the other {low_rank} give the low-rank part)", "Hutch++ trace estimate",
                "Hutch++: the trace of the top subspace found by a random sketch, computed "
                "exactly, plus a Hutchinson estimate over the residual probes for the rest; the line is that sum "
                "after k residual probes.")
    return ("probes (random vectors; one product each)", "Hutchinson trace estimate",
            "Hutchinson: the mean of v^T H v over random sign vectors v; the line is the mean of the "
            "first k probes.")


def report_figure(report: HessianReport) -> Figure:
    """Running trace estimate with a 2-standard-error band; per-layer parts and density when computed."""
    from matplotlib.ticker import MaxNLocator

    r, t = report.result, report.result.trace
    density = r.spectrum is not None and r.options.density
    fig, axes = panel_grid(1 + bool(t.per_layer) + density, size=(5.2, 3.6), columns=2)
    terms = np.asarray(t.samples)
    k = np.arange(1, len(terms) + 1)
    offset = t.estimate - (terms.mean() if len(terms) else 0.0)  # Hutch++'s exact low-rank part
    running = offset + np.cumsum(terms) / k if len(terms) else np.full(1, t.estimate)
    se = np.array([terms[:i].std(ddof=1) / np.sqrt(i) if i > 1 else np.nan for i in k]) if len(terms) else [0]
    x = k if len(terms) else [t.matvecs]
    xlabel, title, how = _trace_axis(t)
    axes[0].plot(x, running, color="C0", marker="o", markersize=3, label="running estimate")
    axes[0].fill_between(x, running - 2 * np.asarray(se), running + 2 * np.asarray(se), alpha=0.25, color="C0",
                         label="± 2 standard errors of the running estimate")
    if r.pyhessian is not None:
        axes[0].axhline(r.pyhessian.estimate, color="C3", ls="--", label="pyhessian")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # integers even for one probe
    axes[0].set(xlabel=xlabel, ylabel="Hessian trace estimate", title=title)
    axes[0].xaxis.label.set_wrap(True)
    legend_below(axes[0], tick_lines=2)
    if t.per_layer:
        names = list(t.per_layer)
        axes[1].barh(names, [t.per_layer[n] for n in names], xerr=[t.per_layer_stderr[n] for n in names],
                     color="C1")
        axes[1].set(xlabel="trace contribution (bars: ± 1 standard error)", ylabel="parameter tensor",
                    title="per parameter tensor")
    if density:
        grid, phi = r.spectrum.density()
        peak = float(np.max(phi)) if len(phi) and np.max(phi) > 0 else 1.0
        axes[-1].semilogy(grid, np.maximum(phi, DENSITY_FLOOR * peak), color="C2")
        axes[-1].set(xlabel="Hessian eigenvalue", ylabel="density (log scale)",
                     title=f"spectral density (SLQ, {r.spectrum.steps} Lanczos steps)")
        axes[-1].text(0.98, 0.97, "floor: 10⁻⁶ × peak (values below drawn at it)",
                      transform=axes[-1].transAxes, ha="right", va="top", fontsize="x-small", color="0.3")
    for ax in axes:
        readable_axes(ax)
    return label_figure(fig, f"Hessian of {_describe(report)}", f"{_caption(r)} {how}")


def run_figure(reports: Sequence[HessianReport]) -> Figure:
    """Trace (+- 2 standard errors) against sparsity (%): cycle averages as a line, particles as points."""
    fig, (ax,) = panel_grid(1, size=(6.0, 3.8))
    for kind, label, style in (("average", "cycle solution (average)", {"marker": "o", "ls": "-", "color": "C0"}),
                               ("particle", "particles", {"marker": ".", "ls": "none", "color": "C1", "alpha": 0.7})):
        rows = [r for r in reports if r.kind == kind]
        if rows:
            ax.errorbar([100 * (1 - r.density) for r in rows], [r.result.trace.estimate for r in rows],
                        yerr=[2 * np.nan_to_num(r.result.trace.stderr) for r in rows], label=label, capsize=3,
                        **style)
    ax.set(xlabel="sparsity (% of prunable weights removed)", ylabel="Hessian trace")
    readable_axes(ax)
    legend_below(ax)
    run = checkpoint_label(reports[0].checkpoint).split("/")[0]
    return label_figure(fig, f"Hessian trace of the cycles of {run}",
                        _caption(reports[0].result, dim=False) + " Error bars: ± 2 standard errors.")
