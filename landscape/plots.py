"""Generic seaborn/matplotlib figures of the landscape tools, built without pyplot's global state.

Every function returns a :class:`matplotlib.figure.Figure` (notebooks display it, the CLIs pass it
to :func:`save_figure`), one panel per entry of an ordered ``{title: data}`` mapping. A figure says
what it shows on its own: ``title`` (the suptitle) names the checkpoints, ``caption`` (small text
under the panels, e.g. BatchNorm and mask handling) says how they were combined.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.artifacts.atomic import atomic_write_bytes

if TYPE_CHECKING:  # matplotlib and seaborn are imported where a figure is drawn: a tool that draws none
    from matplotlib.figure import Figure  # starts as fast as torch allows

PANEL_SIZE = (4.2, 3.4)
CHARS_PER_INCH = {"title": 10, "caption": 15}  # where suptitle (fontsize "large") and caption ("small") wrap
LEGEND_WIDTH = 2.8  # inches added for a legend beside the panels
LINE_STYLES = (("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."))  # marker, line: overlapping lines stay visible


def panel_grid(count: int, style: str = "whitegrid", size: tuple[float, float] = PANEL_SIZE) -> tuple[Figure, list]:
    """A figure of ``count`` panels side by side, each ``size`` inches, in the seaborn ``style``."""
    import seaborn as sns
    from matplotlib.figure import Figure

    with sns.axes_style(style):
        fig = Figure(figsize=(size[0] * count, size[1]), layout="constrained")
        axes = fig.subplots(1, count, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig: Figure, path: str | Path, dpi: int = 150, format: str = "png") -> None:
    """Render ``fig`` in memory (PNG, or another matplotlib ``format`` such as pdf) and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format=format, dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def checkpoint_label(path: str | Path) -> str:
    """A short name of a checkpoint file: ``run/cycle_01/particle_00`` inside a run, else ``folder/name``."""
    p = Path(path)
    parts = [p.parent.name, p.stem]
    if re.fullmatch(r"cycle_\d+", p.parent.name) and p.parent.parent.name:
        parts.insert(0, p.parent.parent.name)
    return "/".join(x for x in parts if x)


def label_figure(fig: Figure, title: str = "", caption: str = "") -> Figure:
    """Set the suptitle and a small caption under the panels, both wrapped to the figure's width."""
    def wrap(text: str, kind: str) -> str:
        width = max(30, int(fig.get_figwidth() * CHARS_PER_INCH[kind]))
        return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))

    if title:
        fig.suptitle(wrap(title, "title"))
    if caption:
        fig.supxlabel(wrap(caption, "caption"), fontsize="small", color="0.25")
    return fig


def line_panels(x: Sequence[float], panels: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str,
                title: str = "", ylabels: Mapping[str, str] | None = None, caption: str = "",
                ymin: float | None = None) -> Figure:
    """One panel per title, one line per label: ``panels[title][label] = y``; lines differ in colour,
    dash and hollow marker, each smaller than the last, so that coinciding ones stay visible.
    ``ylabels[title]`` (default: the title) labels a panel's y axis; ``ymin`` clamps its lower limit
    (e.g. 0 for barriers, which are >= 0)."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = panel_grid(len(panels))
    for ax, (name, lines) in zip(axes, panels.items(), strict=True):
        for n, (label, y) in enumerate(lines.items()):
            marker, dash = LINE_STYLES[n % len(LINE_STYLES)]
            ax.plot(list(x), list(y), marker=marker, linestyle=dash, markersize=max(4, 10 - 3 * n),
                    markerfacecolor="none", markeredgewidth=1.5, color=f"C{n}", label=label, clip_on=False)
        ax.set(xlabel=xlabel, ylabel=(ylabels or {}).get(name, name))
        ax.legend(fontsize="small")
        if ymin is not None:
            ax.set_ylim(bottom=ymin, top=max(ax.get_ylim()[1], ymin + 1e-3))
        if all(float(v).is_integer() for v in x):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return label_figure(fig, title, caption)


def heatmap_panels(panels: Mapping[str, np.ndarray], labels: Sequence[str], title: str = "",
                   xlabel: str = "", ylabel: str = "", fmt: str | Mapping[str, str] = ".3g",
                   colorbar_labels: Mapping[str, str] | None = None, vmin: float | None = None,
                   caption: str = "") -> Figure:
    """One annotated heatmap per title of a square matrix indexed by ``labels`` (NaN = blank).

    ``fmt`` (one per title, or one for all) formats every annotation and colour-bar tick of a panel alike;
    with ``vmin`` (e.g. 0 for barriers) the colour scale starts there, also when a panel is constant.
    """
    import seaborn as sns

    fig, axes = panel_grid(len(panels), style="white")
    for ax, (name, matrix) in zip(axes, panels.items(), strict=True):
        z = np.asarray(matrix, dtype=float)
        form = fmt if isinstance(fmt, str) else fmt[name]
        scale = {}
        if vmin is not None:
            finite = z[np.isfinite(z)]
            top = float(finite.max()) if finite.size else vmin
            scale = {"vmin": vmin, "vmax": top if top > vmin else vmin + 1.0}
        sns.heatmap(z, annot=True, fmt=form, square=True, cmap="viridis", ax=ax, **scale,
                    xticklabels=list(labels), yticklabels=list(labels), annot_kws={"fontsize": "small"},
                    cbar_kws={"format": f"{{x:{form}}}", "label": (colorbar_labels or {}).get(name, "")})
        ax.set(title=name, xlabel=xlabel, ylabel=ylabel)
    return label_figure(fig, title, caption)


def histogram_panels(panels: Mapping[str, Sequence[float]], markers: Mapping[str, Mapping[str, float]],
                     xlabel: str, title: str = "", ylabel: str = "count", caption: str = "") -> Figure:
    """A histogram of values per title, with labelled vertical lines at ``markers[title]`` (the same labels
    in every panel: one legend beside the panels serves all)."""
    import seaborn as sns

    fig, axes = panel_grid(len(panels))
    palette = sns.color_palette("deep")
    for ax, (name, values) in zip(axes, panels.items(), strict=True):
        sns.histplot(x=list(values), ax=ax, color=palette[0], label="hull samples")
        for i, (label, value) in enumerate(markers.get(name, {}).items()):
            ax.axvline(value, color=palette[(i + 1) % len(palette)], linestyle="--", label=label)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
    fig.set_figwidth(fig.get_figwidth() + LEGEND_WIDTH)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize="small")
    return label_figure(fig, title, caption)


def contour_panels(xs: Sequence[float], ys: Sequence[float], panels: Mapping[str, np.ndarray],
                   points: Sequence[tuple[float, float]], point_labels: Sequence[str], title: str = "",
                   log_scale: Sequence[str] = (), xlabel: str = "", ylabel: str = "",
                   colorbar_labels: Mapping[str, str] | None = None, caption: str = "") -> Figure:
    """Filled contours of ``panels[title][iy][ix]`` over the grid ``xs`` x ``ys``, marking ``points``
    and the polygon through them (e.g. the triangle of three checkpoints, Garipov et al. 2018).

    Low values are dark, high values bright (viridis, as the heatmaps). Panels named in ``log_scale``
    get geometrically spaced levels (losses span orders of magnitude).
    """
    fig, axes = panel_grid(len(panels), style="white")
    px, py = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    for ax, (name, grid) in zip(axes, panels.items(), strict=True):
        z = np.asarray(grid, dtype=float)
        finite = z[np.isfinite(z)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1e-12
        levels = np.geomspace(lo, hi, 24) if name in log_scale and lo > 0 else np.linspace(lo, hi, 24)
        filled = ax.contourf(xs, ys, z, levels=levels, cmap="viridis")
        fig.colorbar(filled, ax=ax, format="%.3g", label=(colorbar_labels or {}).get(name, ""))
        ax.plot(np.append(px, px[0]), np.append(py, py[0]), color="white", linewidth=1.2, linestyle="--")
        ax.scatter(px, py, color="red", edgecolor="white", zorder=3)
        for x, y, label in zip(px, py, point_labels, strict=True):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), color="white", fontsize="small")
        ax.set(title=name, aspect="equal", xlabel=xlabel, ylabel=ylabel)
    return label_figure(fig, title, caption)
