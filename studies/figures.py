"""The study's figures (seaborn), one function per notebook, from the tables of :mod:`studies.tables`.

Every curve is the mean over seeds with a band or error bar of one standard deviation between seeds;
x axes are sparsity in percent (the fraction of prunable weights removed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landscape.tools.plots import (
    LINE_STYLES,
    contour_panels,
    decimals_for,
    format_number,
    legend_below,
    panel_grid,
    readable_axes,
    save_figure,
)
from studies.manifest import MethodRoles
from studies.tables import mean_std

PANEL = (5.0, 3.8)  # inches per panel of the study's figures (larger than the landscape tools')


def panels(count: int, columns: int | None = None) -> tuple[Figure, list[Axes]]:
    """:func:`landscape.tools.plots.panel_grid` with the study's panel size."""
    return panel_grid(count, size=PANEL, columns=columns)


def save_png_pdf(fig: Figure, folder: str | Path, name: str) -> list[Path]:
    """Write ``folder/name.png`` and ``folder/name.pdf`` atomically; returns both paths."""
    paths = [Path(folder) / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        save_figure(fig, path, format=path.suffix[1:])
    return paths


def mean_band(ax: Axes, frame: pd.DataFrame, value: str, by: Sequence[str], label: str, scale: float = 1.0,
              x: str = "sparsity", **line: object) -> None:
    """Mean of ``value`` over seeds against ``x`` (its mean per group) with a +-1 std band. The n-th line of
    ``ax`` gets the n-th of :data:`landscape.tools.plots.LINE_STYLES` (marker, dash) with a hollow marker, each
    smaller than the last, so that coinciding lines stay visible (unless ``line`` sets them)."""
    grouped = x in by
    agg = mean_std(frame, by, [value] if grouped else [value, x])
    x_col = x if grouped else f"{x}_mean"
    agg = agg.sort_values(x_col)
    xs = agg[x_col] * (100 if x == "sparsity" else 1)
    mean, std = agg[f"{value}_mean"] * scale, agg[f"{value}_std"].fillna(0.0) * scale
    n = len(ax.lines)
    marker, dash = LINE_STYLES[n % len(LINE_STYLES)]
    style = {"marker": marker, "linestyle": dash, "markersize": max(3, 9 - 2 * n), "markerfacecolor": "none",
             "markeredgewidth": 1.3, **line}
    ax.plot(xs, mean, label=label, **style)
    ax.fill_between(xs, mean - std, mean + std, alpha=0.2, color=ax.lines[-1].get_color())


def sparsity_ticks(ax: Axes, sparsity: Sequence[float]) -> None:
    """An x axis of sparsity (%) ticked at the measured sparsities when there are few (one cycle gives one
    tick, not a range such as 19.00-21.25), with the decimals that tell them apart; else round ticks."""
    values = sorted({round(float(v), 6) for v in sparsity if np.isfinite(v)})
    if 0 < len(values) <= 5:  # more would crowd the axis
        places = decimals_for(values, significant=2, most=2)
        ax.set_xticks(values, [format_number(v, places) for v in values])
        pad = max(1.0, 0.05 * (values[-1] - values[0]))
        ax.set_xlim(values[0] - pad, values[-1] + pad)
    else:
        readable_axes(ax, y=False)


def accuracy_figure(acc: pd.DataFrame, swamp: str | None, zoom_from: float = 0.8) -> Figure:
    """Test accuracy of every method's solution against sparsity; dashed: the SWAMP particles' ensemble.

    The right panel repeats the curves from ``zoom_from`` sparsity on (or, if no iterative method gets
    there, from the median of their sparsities), its y-range set by the iterative methods (one-shot
    baselines may fall below it), where the methods actually differ; its title says where it starts.
    """
    fig, axes = panels(2)
    fig.set_size_inches(14, 5.5)
    iterative = acc[acc["role"] != "oneshot"]
    levels = sorted(iterative["sparsity"].unique()) if len(iterative) else [zoom_from]
    if levels[-1] < zoom_from - 1e-9:
        zoom_from = float(levels[len(levels) // 2])
    for ax in axes:
        for _, frame in acc.groupby("method", sort=False):
            mean_band(ax, frame, "average_test_acc", ["cycle"], frame["label"].iloc[0], 100)
        if swamp is not None:
            frame = acc[acc["method"] == swamp]
            mean_band(ax, frame, "ensemble_test_acc", ["cycle"], f"ensemble of {frame['label'].iloc[0]} particles",
                      100, linestyle="--", color="black", marker="x", markersize=6)
        readable_axes(ax, x=False)
    sparsity_ticks(axes[0], 100 * acc["sparsity"])
    axes[0].set(xlabel="sparsity (%)", ylabel="test accuracy (%)", title="accuracy vs sparsity (mean ± std over seeds)")
    legend_below(axes[0])
    sparse = iterative[iterative["sparsity"] >= zoom_from - 1e-9]
    if not sparse.empty:
        low, high = 100 * sparse["average_test_acc"].min(), 100 * sparse["average_test_acc"].max()
        sparsity_ticks(axes[1], 100 * sparse["sparsity"])
        axes[1].set_ylim(low - 0.5, high + 0.5)
    start = format_number(100 * zoom_from, decimals_for([100 * zoom_from], significant=2, most=1))
    axes[1].set(xlabel="sparsity (%)", ylabel="test accuracy (%)",
                title=f"from {start}% sparsity on (iterative methods' range)")
    return fig


def connectivity_figure(pairs: pd.DataFrame, consecutive: pd.DataFrame, labels: dict[str, str],
                        split: str = "test") -> Figure:
    """Loss and error barriers between particle pairs of a cycle and between consecutive solutions."""
    fig, axes = panels(4, columns=2)
    fig.set_figheight(fig.get_figheight() + 1.5)
    for col, (frame, what) in enumerate(((pairs, "particle pairs of a cycle"),
                                         (consecutive, "solutions of cycles k-1 and k"))):
        frame = frame[frame["split"] == split] if not frame.empty else frame
        for row, (metric, scale, unit) in enumerate((("loss_barrier", 1, ""), ("error_barrier", 100, " (%)"))):
            ax = axes[2 * col + row]
            for method, part in frame.groupby("method", sort=False):
                mean_band(ax, part, metric, ["cycle"], labels[method], scale)
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.set(xlabel="sparsity (%)", ylabel=f"{split} {metric.replace('_', ' ')}{unit}", title=what)
            sparsity_ticks(ax, 100 * frame["sparsity"] if len(frame) else [])
            readable_axes(ax, x=False)
            legend_below(ax)
    fig.suptitle("linear mode connectivity (Frankle et al. 2020 barrier; mean ± std over seeds)")
    return fig


def hull_figure(hull: pd.DataFrame, labels: dict[str, str]) -> Figure:
    """Distribution of the test loss over the particles' convex hull per sparsity, with the worst vertex."""
    fig, (ax,) = panels(1)
    data = hull.assign(sparsity_pct=(100 * hull["sparsity"]).round(1), label=hull["method"].map(labels))
    hues, order = list(dict.fromkeys(data["label"])), sorted(data["sparsity_pct"].unique())
    fig.set_size_inches(max(9.0, 0.9 * len(order)), 4.5)
    sns.boxplot(data=data, x="sparsity_pct", y="loss", hue="label", hue_order=hues, order=order, ax=ax,
                fliersize=1.5)
    worst = data.groupby(["sparsity_pct", "label"])["vertex_loss_max"].mean()
    width = 0.8 / len(hues)  # seaborn's default dodge: the hues share 0.8 of each category
    for n, label in enumerate(hues):
        xs = [i - 0.4 + (n + 0.5) * width for i, s in enumerate(order) if (s, label) in worst.index]
        ys = [worst[(s, label)] for s in order if (s, label) in worst.index]
        ax.scatter(xs, ys, marker="_", s=300, color=sns.color_palette()[n], linewidths=2, zorder=3,
                   label=f"worst particle: {label}")
    ax.set(xlabel="sparsity (%)", ylabel="test loss", title="loss over the convex hull of the particles "
           "(uniform samples; all seeds)")
    ax.legend(fontsize="small")
    return fig


def plane_figure(plane: dict) -> Figure:
    """Test loss and error on the plane through three particles (Garipov et al. 2018)."""
    loss, acc = np.asarray(plane["test"]["loss"]), np.asarray(plane["test"]["acc"])
    return contour_panels(plane["xs"], plane["ys"], {"test loss": loss, "test error (%)": 100 * (1 - acc)},
                          [tuple(v) for v in plane["vertices"]], ["P1", "P2", "P3"],
                          xlabel="x: along P2 - P1 (L2 distance)", ylabel="y: towards P3 (L2 distance)",
                          title=f"plane through 3 particles of {plane['run']}, cycle {plane['cycle']}",
                          log_scale=("test loss",))


def flatness_figure(hessian: pd.DataFrame, labels: dict[str, str]) -> Figure:
    """Hessian trace of each solution against sparsity; bars: std over seeds (Hutchinson stderr if one seed)."""
    fig, (ax,) = panels(1)
    fig.set_size_inches(7, 4.5)
    for method, frame in hessian.groupby("method", sort=False):
        agg = mean_std(frame, ["cycle"], ["trace", "stderr", "sparsity"]).sort_values("sparsity_mean")
        err = agg["trace_std"].where(agg["seeds"] > 1, agg["stderr_mean"])
        ax.errorbar(100 * agg["sparsity_mean"], agg["trace_mean"], yerr=err, marker="o", markersize=3, capsize=3,
                    label=labels[method])
    traces = hessian["trace"][hessian["trace"] > 0]
    log = len(traces) == len(hessian) and len(traces) and traces.max() > 10 * traces.min()  # spans orders
    ax.set(xlabel="sparsity (%)", ylabel="Hessian trace (train loss" + (", log scale)" if log else ")"),
           yscale="log" if log else "linear",
           title="flatness: Hessian trace of the solution (Hutch++; mean ± std over seeds)")
    readable_axes(ax, x=False)
    sparsity_ticks(ax, 100 * hessian["sparsity"])
    legend_below(ax)
    return fig


def ablation_figure(acc: pd.DataFrame, methods: pd.DataFrame) -> Figure:
    """(a) accuracy vs N at three sparsities, (b) SWA only / particles only / SWAMP / IMP, (c) SWAMP+ start,
    (d) final accuracy against cost in particle-epochs."""
    fig, axes = panels(4, columns=2)
    fig.set_figheight(fig.get_figheight() + 3.0)  # room for the legends under the panels
    info = methods.set_index("method")
    roles = MethodRoles(dict(zip(info.index, info["role"], strict=True)))
    last = acc["cycle"] == acc["cycle"].max()
    swa_arms = roles.methods("swa", "swamp", "swamp-n")
    by_n = acc[acc["method"].isin(swa_arms)].assign(N=lambda f: f["method"].map(info["particles"]))
    cycles = sorted(by_n["cycle"].unique())
    for k in sorted({cycles[0], cycles[len(cycles) // 2], cycles[-1]}):
        part = by_n[by_n["cycle"] == k]
        mean_band(axes[0], part, "average_test_acc", ["N"], f"sparsity {100 * part['sparsity'].mean():.1f}%", 100,
                  x="N")
    axes[0].set_xscale("log", base=2)
    axes[0].minorticks_off()
    axes[0].set(xlabel="particles N (with SWA; N=1 is IMP + SWA)", ylabel="test accuracy (%)",
                title="number of particles")
    axes[0].set_xticks(sorted(by_n["N"].unique()), [str(n) for n in sorted(by_n["N"].unique())])
    for ax, arms, title in ((axes[1], ["imp", "swa", "particles", "swamp"], "SWA only vs particles only"),
                            (axes[2], ["swa", "swamp-plus", "swamp"], "SWAMP+ start cycle")):
        for name in [roles[r] for r in arms if roles[r] is not None]:
            mean_band(ax, acc[acc["method"] == name], "average_test_acc", ["cycle"], info.loc[name, "label"], 100)
        ax.set(xlabel="sparsity (%)", ylabel="test accuracy (%)", title=title)
        sparsity_ticks(ax, 100 * acc["sparsity"])
        readable_axes(ax, x=False)
        legend_below(ax)
    final = mean_std(acc[last], ["method", "label"], ["average_test_acc", "particle_epochs"])
    for _, row in final.iterrows():
        axes[3].errorbar(row["particle_epochs_mean"], 100 * row["average_test_acc_mean"],
                         yerr=100 * np.nan_to_num(row["average_test_acc_std"]), marker="o", capsize=3,
                         label=row["label"], linestyle="none")
    axes[3].set_xscale("log")
    axes[3].minorticks_off()
    costs = sorted({round(float(c)) for c in final["particle_epochs_mean"]})
    axes[3].set_xticks(costs, [str(c) for c in costs])
    axes[3].set(xlabel="cost to reach the final sparsity (particle-epochs)",
                ylabel="test accuracy (%)", title=f"cost vs accuracy at {100 * acc[last]['sparsity'].mean():.1f}%")
    legend_below(axes[0])
    legend_below(axes[3])
    for ax in axes:
        readable_axes(ax, x=False)
    return fig
