"""Every figure the toolkit draws reads without the code, also on degenerate inputs: all-zero losses, values in
a tiny range, one cycle and one pair. Each figure must have a title, a label on every axis and on every colour
bar, and tick labels that are there and tell the ticks apart (no "0.0002, 0.0002, 0.0001" or "1.41, 1.41")."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from test_control_figures import controls_json

from core.evaluate import Evaluation
from landscape.connectivity import LinearBarrier
from landscape.spectrum import Spectrum
from landscape.tools.artifacts import MaskInfo, Series
from landscape.tools.barrier import AlignedLine, BarrierResult, BarrierSet, plot_barrier, plot_barrier_set
from landscape.tools.hessian_output import report_figure, run_figure
from landscape.tools.hessian_report import HessianOptions, HessianReport, HessianResult
from landscape.tools.plane import PlaneResult
from landscape.tools.subspace import HullResult, HullSummary, plot_hull, plot_plane
from landscape.trace import TraceEstimate
from studies import control_figures as cf
from studies import controls as sc
from studies import figures as sf
from studies.budget import budget_figure

CASES = ("zero", "tiny", "one")  # all-zero losses; values within 1e-4 of 1.4; one cycle and one pair
MASK = MaskInfo(True, 0.8, (0.8, 0.8))


def values(case: str, n: int, base: float = 1.4, salt: int = 0) -> list[float]:
    """``n`` values of a case: zeros, a tiny range around ``base``, or an ordinary spread."""
    rng = np.random.default_rng(salt)
    if case == "zero":
        return [0.0] * n
    spread = 1e-4 if case == "tiny" else 0.3 * base
    return [base + spread * float(v) for v in rng.random(n)]


def cycles(case: str) -> int:
    return 1 if case == "one" else 3


# ---- the landscape tools' figures ----------------------------------------------------------------------------

def barrier_result(case: str, aligned: bool = False, salt: int = 0) -> BarrierResult:
    lambdas = tuple(np.linspace(0, 1, 5).tolist())
    lines = {}
    for n, s in enumerate(("train", "test")):
        losses, accuracies = tuple(values(case, 5, 0.4, salt + n)), tuple(1 - 0.1 * v for v in values(case, 5, 1, n))
        loss, error = values(case, 2, 3e-4, salt + n)
        lines[s] = LinearBarrier(lambdas, losses, loss, loss, tuple(1 - a for a in accuracies), error, error,
                                 "recalibrated", None, (losses[0], losses[-1]), None, accuracies,
                                 (accuracies[0], accuracies[-1]))
    line = AlignedLine(lines, MASK, None) if aligned else None
    return BarrierResult("run/cycle_01/particle_00.safetensors", "run/cycle_01/particle_01.safetensors", lines,
                         "recalibrated", MASK, "cpu", line)


def barrier_set(case: str, mode: str) -> BarrierSet:
    n = 2 if case == "one" else 4
    if mode == "pairs":
        paths = tuple(f"run/cycle_01/particle_{i:02d}.safetensors" for i in range(n))
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    else:
        paths = tuple(f"run/cycle_{k:02d}/average.safetensors" for k in range(n))
        pairs = [(k, k + 1) for k in range(n - 1)]
    results = []
    for salt, (i, j) in enumerate(pairs):
        result = barrier_result(case, salt=salt)
        mask = MaskInfo(mode == "pairs", 0.8 ** j, (0.8 ** i, 0.8 ** j))
        results.append((i, j, BarrierResult(**{**result.__dict__, "mask": mask})))
    return BarrierSet("run", mode, 1 if mode == "pairs" else None, paths, tuple(results))


def hull_result(case: str) -> HullResult:
    names = tuple(f"run/cycle_01/particle_{i:02d}.safetensors" for i in range(3))
    vertices = {s: Series(tuple(values(case, 3, 0.4, 1)), (0.9, 0.9, 0.9)) for s in ("train", "test")}
    hull = {s: Series(tuple(values(case, 16, 0.4, 2)), (0.9,) * 16) for s in vertices}
    return HullResult(names, vertices, {s: Evaluation(values(case, 1, 0.4)[0], 0.9) for s in vertices},
                      ((1 / 3,) * 3,) * 16, hull, {s: HullSummary(0.4, 0.4, 0.4, 1.0) for s in vertices}, 0,
                      "recalibrated", MASK, "cpu")


def plane_result(case: str) -> PlaneResult:
    xs = ys = tuple(np.linspace(-0.2, 1.2, 6).tolist())
    grid = np.array(values(case, 36, 1.4)).reshape(6, 6)
    return PlaneResult(tuple(f"run/cycle_01/particle_{i:02d}.safetensors" for i in range(3)),
                       ((0.0, 0.0), (1.0, 0.0), (0.5, 0.9)), xs, ys, 0.2,
                       {"test": {"loss": grid, "acc": 1 - grid / 10}}, "recalibrated", MASK, 0)


def hessian_report(case: str, method: str = "hutchpp", cycle: int = 1) -> HessianReport:
    terms = tuple(values(case, 1 if case == "one" else 8, 380.0, cycle))
    trace = TraceEstimate(method, float(np.mean(terms)) + (5.0 if method == "hutchpp" else 0.0),
                          float(np.std(terms) / np.sqrt(len(terms))) if len(terms) > 1 else float("nan"),
                          3 * len(terms) if method == "hutchpp" else len(terms),
                          {"conv.weight": terms[0] / 2, "fc.weight": terms[0] / 2},
                          {"conv.weight": 0.1, "fc.weight": 0.1},
                          terms)
    ritz = np.array([values(case, 4, 10.0, cycle)])
    spectrum = Spectrum(ritz, np.full((1, 4), 0.25), float(ritz.max()), 0.0, 4)
    options = HessianOptions(method=method, per_layer=True, density=True)
    result = HessianResult(options, 256, "mask", 1000, trace, spectrum, None, {"trace": 1.0})
    return HessianReport(f"run/cycle_{cycle:02d}/average.safetensors", "average", cycle, None, 0.8 ** cycle, result)


# ---- the study's figures ----------------------------------------------------------------------------------

METHODS = pd.DataFrame({"method": ["imp", "swa", "particles", "swamp-n4", "swamp-plus", "oneshot"],
                        "role": ["imp", "swa", "particles", "swamp", "swamp-plus", "oneshot"],
                        "label": ["IMP", "IMP + SWA", "particles", "SWAMP (N=4)", "SWAMP+", "one-shot"],
                        "particles": [1, 1, 4, 4, 4, 1]})
LABELS = dict(zip(METHODS["method"], METHODS["label"], strict=True))


def study_rows(case: str, **columns: Callable[[int], float]) -> pd.DataFrame:
    """One row per method, seed and cycle with ``columns[name](row number)``."""
    rows = []
    for method, role, label in zip(METHODS["method"], METHODS["role"], METHODS["label"], strict=True):
        for seed in (0, 1):
            for cycle in range(cycles(case)):
                n = len(rows)
                rows.append({"method": method, "role": role, "label": label, "seed": seed, "cycle": cycle,
                             "sparsity": 1 - 0.8 ** cycle, "split": "test", "particle_epochs": 8 * (cycle + 1),
                             **{name: f(n) for name, f in columns.items()}})
    return pd.DataFrame(rows)


def column(case: str, base: float) -> Callable[[int], float]:
    return lambda n: values(case, 1, base, n)[0]


def accuracy(case: str) -> pd.DataFrame:
    """Accuracies are never all zero: the zero case has ordinary ones."""
    spread = "tiny" if case == "tiny" else "one"
    return study_rows(case, average_test_acc=column(spread, 0.9), ensemble_test_acc=column(spread, 0.9))


def budget_frame(case: str) -> pd.DataFrame:
    rows = [{"a_epochs": e, "b_epochs": 4 * e, "cycle": k, "sparsity": 1 - 0.8 ** k,
             "mean": values(case, 1, 0.01, k)[0], "std": values(case, 1, 0.005, k)[0],
             "a_cost": 4 * e * (k + 1), "b_cost": 4 * e * (k + 1),
             "a_acc": 0.9, "b_acc": 0.9 - values(case, 1, 0.01, k)[0], "a_acc_std": 0.01, "b_acc_std": 0.01}
            for e in (4, 8) for k in range(cycles(case))]
    return pd.DataFrame(rows)


def controls(case: str) -> sc.Controls:
    """The controls of tests/test_control_figures.py: barriers and hull excesses all zero or in a tiny range,
    or only the first cycle."""
    obj = controls_json(np.random.default_rng(3))
    rows = obj["rows"]
    for kind, entries in rows.items():
        if case == "one":
            rows[kind] = [r for r in entries if r["cycle"] == 0]
            continue
        for n, r in enumerate(entries):
            for key in ("loss", "error", "aligned_loss", "aligned_error", "excess_mean", "excess_max"):
                if r.get(key) is not None:
                    r[key] = values(case, 1, 1e-3, n)[0]
    return sc.Controls(sc.Settings(), rows, obj["unalignable"], obj["seconds"])


def figures(case: str) -> dict[str, Figure]:
    """Every figure the toolkit draws, on the inputs of ``case``."""
    control = controls(case)
    drawn = {
        "barrier": plot_barrier(barrier_result(case)),
        "barrier --align": plot_barrier(barrier_result(case, aligned=True)),
        "barrier pairs": plot_barrier_set(barrier_set(case, "pairs")),
        "barrier --consecutive": plot_barrier_set(barrier_set(case, "consecutive")),
        "subspace hull": plot_hull(hull_result(case)),
        "subspace --plane": plot_plane(plane_result(case)),
        "hessian (hutchpp)": report_figure(hessian_report(case)),
        "hessian (hutchinson)": report_figure(hessian_report(case, "hutchinson")),
        "hessian --run": run_figure([hessian_report(case, cycle=k) for k in range(cycles(case))]),
        "01 accuracy": sf.accuracy_figure(accuracy(case), "swamp-n4"),
        "02 connectivity": sf.connectivity_figure(
            study_rows(case, loss_barrier=column(case, 3e-4), error_barrier=column(case, 1e-3)),
            study_rows(case, loss_barrier=column(case, 3e-4), error_barrier=column(case, 1e-3)), LABELS),
        "03 hull": sf.hull_figure(study_rows(case, loss=column(case, 0.4), vertex_loss_max=column(case, 0.4)), LABELS),
        "03 plane": sf.plane_figure({"xs": plane_result(case).xs, "ys": plane_result(case).ys, "run": "run",
                                     "cycle": 1, "vertices": [(0, 0), (1, 0), (0.5, 0.9)],
                                     "test": {"loss": plane_result(case).grids["test"]["loss"],
                                              "acc": plane_result(case).grids["test"]["acc"]}}),
        "04 flatness": sf.flatness_figure(study_rows(case, trace=column("one" if case == "zero" else case, 380),
                                                     stderr=column(case, 1.0)), LABELS),
        "05 ablations": sf.ablation_figure(accuracy(case), METHODS),
        "06 budget": budget_figure(budget_frame(case)),
        "07 connectivity null": cf.connectivity_figure(cf.connectivity_frame(control), control.unalignable),
        "07 hull null": cf.hull_figure(cf.hull_frame(control)),
        "07 flatness": cf.flatness_figure(cf.flatness_frame(control)),
        "07 rewind": cf.rewind_figure(cf.rewind_frame(control)),
        "07 flatness vs accuracy": cf.flatness_accuracy_figure(cf.flatness_accuracy_frame(control),
                                                               sc.correlation_rows(control)),
    }
    return drawn


def problems(fig: Figure) -> list[str]:
    """What a reader would miss: a title, axis and colour-bar labels, present and distinct tick labels."""
    FigureCanvasAgg(fig).draw()
    found = []
    main = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    if not fig.get_suptitle() and not all(ax.get_title() for ax in main):
        found.append("no title")
    for n, ax in enumerate(fig.axes):
        colorbar = getattr(ax, "_colorbar", None)
        axes = [(ax.yaxis if colorbar.orientation == "vertical" else ax.xaxis)] if colorbar else [ax.xaxis, ax.yaxis]
        for axis in axes:
            name = f"axes {n} ({ax.get_title() or 'colour bar'}) {axis.axis_name}"
            if not axis.get_label_text():
                found.append(f"{name}: no label")
            lo, hi = sorted(axis.get_view_interval())
            slack = 1e-9 * abs(hi - lo)
            texts = [t.get_text() for loc, t in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=True)
                     if lo - slack <= loc <= hi + slack]  # the ticks in view
            if not texts or not all(texts):
                found.append(f"{name}: missing tick labels {texts}")
            elif len(set(texts)) < len(texts):
                found.append(f"{name}: repeated tick labels {texts}")
    return found


@pytest.mark.parametrize("case", CASES)
def test_every_figure_reads_on_degenerate_inputs(case):
    bad = {name: found for name, fig in figures(case).items() if (found := problems(fig))}
    assert not bad, bad
