"""Figures of the controls of issue 17 (docs/controls.md), from the JSON of ``python -m studies.controls``.

Each figure has a *frame* function (a tidy :class:`pandas.DataFrame` holding exactly the numbers the
figure draws, one row per point) and a *figure* function that draws that frame. The frames follow the
Markdown tables of :mod:`studies.controls`: means +- sample standard deviations over seeds (particle
pairs are first averaged within each seed) or over seed pairs, SWAMP - IMP differences paired by seed
(:func:`studies.claims.paired`), and sparsity in percent (the fraction of prunable weights removed).

* connectivity null: test-loss barrier (Frankle et al. 2020) between the particles of one SWAMP cycle
  beside that between solutions of different seeds, raw and after weight matching (Ainsworth et al. 2023);
* hull null: mean loss over the hull of K particles minus the vertices' mean, beside the hull of K seeds;
* flatness: SWAMP - IMP of the raw Hessian trace and of the BatchNorm-invariant traces
  (:func:`landscape.flatness.normalized_trace`; Dinh et al. 2017 for why), relative to IMP's mean;
* rewind: particle-pair barriers and SWAMP - IMP accuracy against the rewind point (Frankle et al. 2020);
* flatness against accuracy: every (method, seed, cycle) point with Spearman's rho.

Example (the notebook ``analysis_notebooks/07_controls.ipynb`` does this for every figure)::

    from studies.control_figures import connectivity_figure, connectivity_frame, load_controls
    from studies.figures import save_png_pdf

    controls = load_controls("runs/controls/controls.json")
    frame = connectivity_frame(controls)  # one row per point: model, series, cycle, sparsity, mean, std, n
    save_png_pdf(connectivity_figure(frame, controls.unalignable), "runs/figures", "controls_connectivity")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import ScaledTranslation

from landscape.tools.plots import LEGEND_WIDTH, LINE_STYLES, label_figure
from studies import controls as sc
from studies.claims import paired
from studies.controls.realisations import load_controls  # noqa: F401 - the notebook reads it from here
from studies.controls.verdicts import label as cell_label
from studies.controls.verdicts import outcomes
from studies.figures import PANEL
from studies.tables import mean_std

MEASURES = {"raw": "raw trace", "normalized": "BN-invariant, per layer", "channel": "BN-invariant, per channel"}
LOSS_LINEAR = 1e-4  # barriers below this are drawn on a linear scale (symlog): many are exactly 0
DODGE = 0.06  # inches between the error bars of neighbouring series at one x


# ---- frames ------------------------------------------------------------------------------------------------

def _rows(controls: sc.Controls, kind: str, **where: Any) -> pd.DataFrame:
    frame = pd.DataFrame(controls.rows[kind])
    for key, value in where.items():
        frame = frame[frame[key] == value] if len(frame) else frame
    return frame


def _summary(frame: pd.DataFrame, by: Sequence[str], value: str, per_seed: bool) -> pd.DataFrame:
    """Mean, sample std and count of ``value`` per group ``by`` (over seeds, rows of a seed averaged first,
    when ``per_seed``; else over rows), with the group's mean sparsity in percent; missing values left out."""
    frame = frame.dropna(subset=[value]) if len(frame) else frame
    if not len(frame):
        return pd.DataFrame(columns=[*by, "sparsity", "mean", "std", "n"])
    if per_seed:
        out = mean_std(frame, by, [value, "sparsity"]).rename(columns={"seeds": "n"})
    else:
        grouped = frame.groupby(list(by))
        out = grouped[[value, "sparsity"]].mean().add_suffix("_mean").join(
            grouped[[value]].std(ddof=1).add_suffix("_std"))
        out["n"] = grouped.size()
        out = out.reset_index()
    return pd.DataFrame({**{k: out[k] for k in by}, "sparsity": 100 * out["sparsity_mean"],
                         "mean": out[f"{value}_mean"], "std": out[f"{value}_std"], "n": out["n"]})


def _by_series(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    out = pd.concat(parts, ignore_index=True)[["model", "series", "cycle", "sparsity", "mean", "std", "n"]]
    return out.sort_values(["model", "cycle"], kind="stable", ignore_index=True)


def connectivity_frame(controls: sc.Controls, metric: str = "loss") -> pd.DataFrame:
    """Test ``metric`` (loss, or error in %) barrier per model, cycle and series: ``SWAMP particle pairs``
    (of the grid's rewind point; mean over each seed's pairs, then mean +- std over seeds) and ``{SWAMP,IMP}
    seed pairs, {raw,aligned}`` (mean +- std over the seed pairs); the columns of the connectivity table.

    Example::

        frame = connectivity_frame(load_controls("runs/controls/controls.json"))
        frame[frame["series"] == "SWAMP particle pairs"]  # mean, std over seeds per model and sparsity
    """
    scale = 100.0 if metric == "error" else 1.0
    parts = [_summary(_rows(controls, "particle_pairs", rewind=controls.settings.rewind), ["model", "cycle"],
                      metric, per_seed=True).assign(series="SWAMP particle pairs")]
    for method in ("swamp", "imp"):
        for key, kind in ((metric, "raw"), (f"aligned_{metric}", "aligned")):
            parts.append(_summary(_rows(controls, "seed_pairs", method=method), ["model", "cycle"], key,
                                  per_seed=False).assign(series=f"{method.upper()} seed pairs, {kind}"))
    out = _by_series(parts)
    out[["mean", "std"]] = out[["mean", "std"]].astype(float) * scale
    return out


def hull_frame(controls: sc.Controls, measure: str = "excess_mean") -> pd.DataFrame:
    """``measure`` of the hull table (default: mean hull test loss minus the vertices' mean) per model, cycle
    and series: ``SWAMP particles (per seed)`` (mean +- std over seeds) and ``{SWAMP,IMP} seeds`` (one hull of
    K seeds' solutions per cycle: std NaN)."""
    parts = [_summary(_rows(controls, "particle_hulls"), ["model", "cycle"], measure, per_seed=True)
             .assign(series="SWAMP particles (per seed)")]
    parts += [_summary(_rows(controls, "seed_hulls", method=method), ["model", "cycle"], measure, per_seed=False)
              .assign(series=f"{method.upper()} seeds") for method in ("swamp", "imp")]
    return _by_series(parts)


def flatness_frame(controls: sc.Controls) -> pd.DataFrame:
    """SWAMP - IMP per model, measure (raw trace, BN-invariant per layer / per channel) and cycle, paired by
    seed: ``imp_mean`` (IMP's mean over seeds), ``mean`` +- ``std`` of the difference, ``record``
    (wins/ties/losses), ``holds`` ("SWAMP is flatter" holds under the one rule,
    :func:`studies.controls.verdicts.outcomes`) and ``relative_mean``
    +- ``relative_std`` = 100 (mean, std) / imp_mean, in percent of IMP's value. Measures a model lacks
    (no layer followed by BatchNorm) have no row."""
    frame, rows = _rows(controls, "flatness"), []
    verdicts = outcomes(controls)
    families = dict(zip(MEASURES, ("flatter_raw", "flatter_layer", "flatter_channel"), strict=True))
    for model in sorted(frame["model"].unique()) if len(frame) else []:
        for key, name in MEASURES.items():
            part = frame[(frame["model"] == model) & frame[key].notna()]
            for p in paired(part, key, "swamp", "imp") if len(part) else []:
                imp = float(part.loc[(part["method"] == "imp") & (part["cycle"] == p.cycle), key].mean())
                rows.append({"model": model, "measure": name, "cycle": p.cycle, "sparsity": 100 * p.sparsity,
                             "imp_mean": imp, "mean": p.mean, "std": p.std, "seeds": p.seeds, "record": p.record(),
                             "holds": verdicts.get((families[key], cell_label((model, 0, p.cycle, p.sparsity))))
                             == "holds",
                             "relative_mean": 100 * p.mean / imp,
                             "relative_std": 100 * p.std / imp})
    return pd.DataFrame(rows, columns=["model", "measure", "cycle", "sparsity", "imp_mean", "mean", "std", "seeds",
                                       "record", "holds", "relative_mean", "relative_std"])


REWIND_QUANTITIES = ("particle-pair test-loss barrier", "particle-pair test-error barrier (%)",
                     "SWAMP − IMP test accuracy (points)")


def rewind_frame(controls: sc.Controls) -> pd.DataFrame:
    """Per model with several rewind points, per rewind point (dense epochs) and cycle: the particle-pair
    test-loss and test-error (%) barriers (mean over each seed's pairs, then mean +- std over seeds) and
    SWAMP - IMP test accuracy (points; paired by seed), as ``quantity`` rows of the rewind table."""
    acc, pairs, parts = _rows(controls, "accuracy"), _rows(controls, "particle_pairs"), []
    for model in sorted(acc["model"].unique()) if len(acc) else []:
        rewinds = sorted(acc.loc[acc["model"] == model, "rewind"].unique())
        if len(rewinds) < 2:
            continue
        mine = pairs[pairs["model"] == model] if len(pairs) else pairs
        for quantity, metric, scale in zip(REWIND_QUANTITIES[:2], ("loss", "error"), (1.0, 100.0), strict=True):
            part = _summary(mine, ["model", "rewind", "cycle"], metric, per_seed=True)
            parts.append(part.assign(quantity=quantity, mean=part["mean"] * scale, std=part["std"] * scale))
        for rewind in rewinds:
            parts.append(pd.DataFrame([
                {"model": model, "rewind": int(rewind), "cycle": p.cycle, "sparsity": 100 * p.sparsity,
                 "mean": 100 * p.mean, "std": 100 * p.std, "n": p.seeds, "quantity": REWIND_QUANTITIES[2]}
                for p in paired(acc[(acc["model"] == model) & (acc["rewind"] == rewind)], "test_acc", "swamp", "imp")]))
    columns = ["model", "quantity", "rewind", "cycle", "sparsity", "mean", "std", "n"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns].sort_values(["model", "rewind", "cycle"], kind="stable",
                                                                    ignore_index=True)


def flatness_accuracy_frame(controls: sc.Controls) -> pd.DataFrame:
    """Every (model, measure, method, seed, cycle) point: the flatness ``value`` and the test accuracy (%)."""
    frame = _rows(controls, "flatness")
    parts = [frame.dropna(subset=[key]).assign(measure=name, value=frame[key].astype(float))
             for key, name in MEASURES.items() if len(frame)]
    columns = ["model", "measure", "method", "seed", "cycle", "sparsity", "value", "test_acc"]
    if not parts:
        return pd.DataFrame(columns=columns)
    out = pd.concat(parts, ignore_index=True)
    return out.assign(sparsity=100 * out["sparsity"], test_acc=100 * out["test_acc"])[columns]


# ---- figures -----------------------------------------------------------------------------------------------

def _grid(rows: int, cols: int, size: tuple[float, float] = PANEL) -> tuple[Figure, np.ndarray]:
    """A constrained figure of rows x cols panels in seaborn's whitegrid style, with room for a legend."""
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(size[0] * cols + LEGEND_WIDTH, size[1] * rows + 0.6), layout="constrained")
        return fig, fig.subplots(rows, cols, squeeze=False)


def _series(ax: Axes, frame: pd.DataFrame, x: str, label: str, n: int, count: int, clip_at_zero: bool = False,
            value: str = "mean", spread: str = "std", **style: Any) -> None:
    """``value`` against ``x`` with +-``spread`` error bars (clipped at 0 for quantities that are >= 0),
    style ``n`` of :data:`landscape.tools.plots.LINE_STYLES`; series ``n`` of ``count`` is shifted sideways by a
    few points on the page (not in the data) so that the error bars of series at one x stay apart."""
    frame = frame.sort_values(x)
    mean, std = frame[value].to_numpy(float), np.nan_to_num(frame[spread].to_numpy(float))
    low = np.minimum(std, np.maximum(mean, 0.0)) if clip_at_zero else std
    marker, dash = LINE_STYLES[n % len(LINE_STYLES)]
    xs = frame[x].to_numpy(float)
    ax.errorbar(xs, mean, yerr=[low, std], marker=marker, linestyle=dash, color=f"C{n}", markersize=5, capsize=3,
                label=label, transform=ax.transData + _shift(ax, n, count), **style)
    # an artist drawn through another transform than transData does not move the axis limits by itself
    ax.update_datalim(np.column_stack([np.concatenate([xs, xs]), np.concatenate([mean - low, mean + std])]))
    ax.autoscale_view()


def _shift(ax: Axes, n: int, count: int) -> ScaledTranslation:
    """Series ``n`` of ``count``: a sideways offset on the page (the data keep their x)."""
    return ScaledTranslation((n - (count - 1) / 2) * DODGE, 0, ax.figure.dpi_scale_trans)


def _symlog(ax: Axes, linear_below: float, nonnegative: bool = False) -> None:
    """A symmetric-log y axis, linear within +-``linear_below``, with a zero line; for ``nonnegative``
    quantities it starts just below 0, so that points at 0 stay whole."""
    ax.set_yscale("symlog", linthresh=linear_below)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    if nonnegative:
        ax.set_ylim(bottom=-0.2 * linear_below)


def _sparsity_axis(ax: Axes, frame: pd.DataFrame) -> None:
    ticks = sorted(frame["sparsity"].round(1).unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("sparsity (% of prunable weights removed)")


def _legend(fig: Figure, axes: Sequence[Axes], extra: Sequence[Line2D] = ()) -> None:
    """One legend beside the panels: every label of ``axes`` once, then the ``extra`` handles."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    handles.update({h.get_label(): h for h in extra})
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize="small")


def connectivity_figure(frame: pd.DataFrame, unalignable: Mapping[str, str] | None = None) -> Figure:
    """The :func:`connectivity_frame` (test loss) as one panel per model: barrier against sparsity on a
    symmetric-log axis (linear below 1e-4, where many particle pairs are exactly 0)."""
    models = sorted(frame["model"].unique())
    fig, axes = _grid(1, len(models))
    series = list(dict.fromkeys(frame["series"]))
    for ax, model in zip(axes[0], models, strict=True):
        for n, name in enumerate(series):
            part = frame[(frame["model"] == model) & (frame["series"] == name)]
            if len(part):
                _series(ax, part, "sparsity", name, n, len(series), clip_at_zero=True)
        _symlog(ax, LOSS_LINEAR, nonnegative=True)
        _sparsity_axis(ax, frame[frame["model"] == model])
        ax.set(ylabel="test-loss barrier (nats; linear below 1e-4)",
               title=model + ("\n(aligned: n/a, weight matching refuses it)" if model in (unalignable or {}) else ""))
    _legend(fig, axes[0])
    return label_figure(fig, "Connectivity null: loss barrier between the particles of one SWAMP cycle (one ticket) "
                        "and between the solutions of different seeds (control)",
                        "Barrier: largest test loss on the line minus the chord (Frankle et al. 2020), "
                        "BatchNorm recomputed. Mean ± std over seeds (particle pairs averaged within a seed) or over "
                        "seed pairs; aligned = weight matching (Ainsworth et al. 2023). Bars are clipped at 0 "
                        "(a barrier is ≥ 0).")


def hull_figure(frame: pd.DataFrame) -> Figure:
    """The :func:`hull_frame` as one panel per model, on a symmetric-log axis (linear within +-1e-3)."""
    models = sorted(frame["model"].unique())
    fig, axes = _grid(1, len(models))
    series = list(dict.fromkeys(frame["series"]))
    for ax, model in zip(axes[0], models, strict=True):
        for n, name in enumerate(series):
            part = frame[(frame["model"] == model) & (frame["series"] == name)]
            if len(part):
                _series(ax, part, "sparsity", name, n, len(series))
        _symlog(ax, 1e-3)
        _sparsity_axis(ax, frame[frame["model"] == model])
        ax.set(ylabel="mean hull loss − mean vertex loss\n(test loss, nats; linear within ±1e-3)", title=model)
    _legend(fig, axes[0])
    return label_figure(fig, "Hull null: is the hull of the particles of one cycle low-loss beyond what the hull "
                        "of any solutions is? (below 0: the hull is lower than its vertices)",
                        "Uniform Dirichlet samples of the convex hull of K particles of one SWAMP cycle (mean ± std "
                        "over seeds) and of K solutions of K different seeds at the same cycle (one hull per method "
                        "and cycle).")


def flatness_figure(frame: pd.DataFrame) -> Figure:
    """The :func:`flatness_frame` as one panel per model: SWAMP - IMP in % of IMP's value against sparsity,
    per measure, with a zero line; markers are filled where "SWAMP is flatter" holds under the one rule.
    A model without the BatchNorm-invariant measures says so in its title."""
    models = sorted(frame["model"].unique())
    fig, axes = _grid(1, len(models))
    measures = list(MEASURES.values())
    for ax, model in zip(axes[0], models, strict=True):
        mine = frame[frame["model"] == model]
        for n, name in enumerate(measures):
            part = mine[mine["measure"] == name].sort_values("sparsity")
            if not len(part):
                continue
            _series(ax, part, "sparsity", name, n, len(measures), value="relative_mean", spread="relative_std",
                    markerfacecolor="none")
            holds = part[part["holds"].astype(bool)]
            ax.plot(holds["sparsity"], holds["relative_mean"], linestyle="none", marker=LINE_STYLES[n][0],
                    markersize=5, color=f"C{n}", label=f"_holds: {name}",
                    transform=ax.transData + _shift(ax, n, len(measures)))
        ax.axhline(0.0, color="grey", linewidth=0.8)
        _sparsity_axis(ax, mine if len(mine) else frame)
        ax.set(ylabel="SWAMP − IMP (% of IMP's mean)", title=model if mine["measure"].isin(measures[1:]).any()
               else f"{model}\n(BN-invariant: n/a, no layer followed by BatchNorm)")
    _legend(fig, axes[0], [Line2D([], [], color="0.3", marker="o", linestyle="none",
                                  label="filled: flatter holds (one rule)"),
                           Line2D([], [], color="0.3", marker="o", markerfacecolor="none", linestyle="none",
                                  label="hollow: it does not (or not yet)")])
    return label_figure(fig, "Flatness: SWAMP − IMP of the Hessian trace, raw and BatchNorm-invariant (below 0: "
                        "SWAMP flatter)",
                        "Paired by seed (same dense ticket): mean ± std over seeds of the difference, divided by "
                        "IMP's mean. BN-invariant: sum over the layers (or channels) in front of a BatchNorm of "
                        "‖θ‖² tr H (Dinh et al. 2017). Filled: \"SWAMP is flatter\" holds by the one rule (delta 10%, "
                        "paired t interval on the relative difference, Holm over model x sparsity, >= 6 seeds).")


REWIND_AXES = {  # quantity -> y label, linear range of the symmetric-log axis (None: a linear axis)
    REWIND_QUANTITIES[0]: ("test-loss barrier (nats; linear below 1e-4)", LOSS_LINEAR),
    REWIND_QUANTITIES[1]: ("test-error barrier (points; linear below 0.01)", 1e-2),
    REWIND_QUANTITIES[2]: ("SWAMP − IMP test accuracy (points)", None),
}


def rewind_figure(frame: pd.DataFrame) -> Figure:
    """The :func:`rewind_frame` as one row per model, one panel per quantity, one line per sparsity, against
    the rewind point (epochs of dense training the ticket is rewound to)."""
    models = sorted(frame["model"].unique())
    fig, axes = _grid(len(models), len(REWIND_QUANTITIES))
    for row, model in zip(axes, models, strict=True):
        mine = frame[frame["model"] == model]
        cycles = sorted(mine["cycle"].unique())
        for ax, quantity in zip(row, REWIND_QUANTITIES, strict=True):
            ylabel, linear = REWIND_AXES[quantity]
            for n, cycle in enumerate(cycles):
                part = mine[(mine["quantity"] == quantity) & (mine["cycle"] == cycle)]
                sparsity = mine.loc[mine["cycle"] == cycle, "sparsity"].mean()
                _series(ax, part, "rewind", f"sparsity {sparsity:.1f}%", n, len(cycles),
                        clip_at_zero=linear is not None)
            if linear is None:
                ax.axhline(0.0, color="grey", linewidth=0.8)
            else:
                _symlog(ax, linear, nonnegative=True)
            ticks = sorted(mine["rewind"].unique())
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.set(xlabel="rewind point (epochs of dense training)", ylabel=ylabel, title=f"{model}: {quantity}")
    _legend(fig, axes.ravel())
    return label_figure(fig, "Rewind point: the particles are connected (a stable ticket) only after some dense "
                        "training, and SWAMP needs that",
                        "Rewind point r: the ticket is the network after r epochs of dense training (0: the "
                        "initialisation). Barriers: mean over the particle pairs of a seed, then mean ± std over "
                        "seeds (bars clipped at 0); SWAMP − IMP paired by seed, mean ± std over seeds.")


FLATNESS_AXES = {"raw": "tr H (training loss)", "normalized": "Σ over layers ‖θ_l‖² tr H_ll",
                 "channel": "Σ over channels ‖θ_c‖² tr H_cc"}


def flatness_accuracy_figure(frame: pd.DataFrame, correlations: Sequence[Mapping[str, Any]]) -> Figure:
    """The :func:`flatness_accuracy_frame` as one scatter panel per (model, measure) of ``correlations``
    (:func:`studies.controls.correlation_rows`), colour = method, marker = sparsity; each title gives
    Spearman's rho (p) over all points and the within-cycle rank correlation (p)."""
    cols = min(3, len(correlations))
    rows = -(-len(correlations) // cols)
    fig, grid = _grid(rows, cols, size=(4.6, 4.0))
    axes = grid.ravel()
    for ax in axes[len(correlations):]:
        fig.delaxes(ax)
    methods = sorted(frame["method"].unique())
    sparsities = sorted(frame["sparsity"].round(1).unique())
    markers = dict(zip(sparsities, "osD^v<>p*", strict=False))
    for ax, corr in zip(axes, correlations, strict=False):
        name = MEASURES[corr["measure"]]
        part = frame[(frame["model"] == corr["model"]) & (frame["measure"] == name)]
        for n, method in enumerate(methods):
            for sparsity in sparsities:
                points = part[(part["method"] == method) & (part["sparsity"].round(1) == sparsity)]
                ax.scatter(points["value"], points["test_acc"], color=f"C{n}", marker=markers.get(sparsity, "o"),
                           s=28, alpha=0.8, label=f"_{method} {sparsity}")
        ax.set(xlabel=FLATNESS_AXES[corr["measure"]], ylabel="test accuracy (%)",
               title=f"{corr['model']}, {name}\nSpearman ρ = {corr['rho']:+.2f} (p = {corr['p']:.3f}), "
                     f"within cycles {corr['within_cycle_rho']:+.2f} (p = {corr['within_cycle_p']:.3f})")
        ax.title.set_fontsize("medium")
    _legend(fig, axes[:len(correlations)], [Line2D([], [], color=f"C{n}", marker="o", linestyle="none", label=m.upper())
                           for n, m in enumerate(methods)]
            + [Line2D([], [], color="0.3", marker=markers[s], linestyle="none", label=f"sparsity {s:g}%")
               for s in sparsities])
    return label_figure(fig, "Are flatter solutions more accurate? Hessian trace against test accuracy, every "
                        "(method, seed, cycle)",
                        "ρ < 0: flatter (smaller trace) goes with more accurate. Within cycles: the correlation of "
                        "ranks taken within each cycle, which removes the common trend with sparsity.")
