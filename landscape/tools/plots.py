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

from core.artifacts.atomic import atomic_write_bytes

if TYPE_CHECKING:  # matplotlib and seaborn are imported where a figure is drawn: a tool that draws none
    from matplotlib.axes import Axes  # starts as fast as torch allows
    from matplotlib.colorbar import Colorbar
    from matplotlib.figure import Figure

PANEL_SIZE = (4.2, 3.4)
CHARS_PER_INCH = {"title": 10, "caption": 15}  # where suptitle (fontsize "large") and caption ("small") wrap
LEGEND_WIDTH = 2.8  # inches added for a legend beside the panels
LINE_STYLES = (("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."))  # marker, line: overlapping lines stay visible


def panel_grid(count: int, style: str = "whitegrid", size: tuple[float, float] = PANEL_SIZE,
               columns: int | None = None) -> tuple[Figure, list]:
    """A figure of ``count`` panels, each ``size`` inches, in the seaborn ``style``: side by side, or in rows
    of ``columns`` panels (the axes listed row by row; unused cells of the last row are removed)."""
    import seaborn as sns
    from matplotlib.figure import Figure

    cols = min(count, columns or count)
    rows = -(-count // cols)
    with sns.axes_style(style):
        fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
        axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[count:]:
        fig.delaxes(ax)
    return fig, axes[:count]


def decimals_for(values: Sequence[float], significant: int = 2, most: int = 8) -> int:
    """Decimals that tell ``values`` apart and show the smallest non-zero magnitude with ``significant``
    digits (at most ``most``): tick labels and legends of one figure then share one number format."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    nonzero = np.abs(finite[finite != 0])
    if not nonzero.size:
        return 0
    places = max(0, significant - 1 - int(np.floor(np.log10(nonzero.min()))))
    while places < most and len({f"{v:.{places}f}" for v in finite}) < len(set(finite.tolist())):
        places += 1
    return min(places, most)


def format_number(value: float, places: int) -> str:
    """``value`` with ``places`` decimals (:func:`decimals_for`), and ``-0`` written ``0``."""
    text = f"{value:.{places}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def distinct_tick_formatter():
    """A matplotlib formatter whose labels of one axis share the fewest decimals that keep them distinct
    and true to the tick values: never ``1.41, 1.41, 1.4``, nor an offset or power in the axis corner."""
    from matplotlib.ticker import Formatter

    class DistinctFormatter(Formatter):
        places = 0

        def set_locs(self, locs: Sequence[float]) -> None:
            super().set_locs(locs)
            ticks = sorted(set(np.round(np.asarray(locs, dtype=float), 12).tolist()))
            step = min(np.diff(ticks)) if len(ticks) > 1 else 0.0
            self.places = decimals_for(ticks, significant=1)
            while step and self.places < 12 and any(abs(float(f"{v:.{self.places}f}") - v) > step / 100
                                                    for v in ticks):
                self.places += 1

        def __call__(self, x: float, pos: int | None = None) -> str:
            return format_number(x, self.places)

    return DistinctFormatter()


def readable_axes(ax: Axes, x: bool = True, y: bool = True) -> None:
    """:func:`distinct_tick_formatter` on the numeric linear axes of ``ax`` (log axes, categorical axes and
    axes given their own tick labels keep them)."""
    from matplotlib.ticker import ScalarFormatter

    for on, axis in ((x, ax.xaxis), (y, ax.yaxis)):
        if on and axis.get_scale() == "linear" and type(axis.get_major_formatter()) is ScalarFormatter:
            axis.set_major_formatter(distinct_tick_formatter())


def colorbar_ticks(cbar: Colorbar, lo: float, hi: float, log: bool = False) -> None:
    """Round, distinct ticks on a colour bar over [lo, hi]; one tick, labelled with the value, where the
    data are constant (a colour bar of all-zero data shows "0", not a scale from 0 to 1)."""
    from matplotlib.ticker import FixedLocator, LogLocator, MaxNLocator

    if not hi > lo:
        cbar.set_label(f"{cbar.ax.get_ylabel()} (every value {format_number(lo, decimals_for([lo], 3))})")
        cbar.set_ticks(FixedLocator([lo]))
        cbar.ax.yaxis.set_major_formatter(distinct_tick_formatter())
        return
    cbar.set_ticks(LogLocator(subs=(1.0, 2.0, 5.0)) if log else MaxNLocator(nbins=5))
    cbar.ax.yaxis.set_major_formatter(distinct_tick_formatter())
    cbar.ax.minorticks_off()


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


def legend_below(ax: Axes, tick_lines: int = 1, **legend: object) -> None:
    """The axes' legend under its x label (``tick_lines``: lines of each x tick label), where it hides no
    line, band or point; constrained layout makes the room."""
    from matplotlib.transforms import ScaledTranslation

    below = (6 + 14 * tick_lines + 18) / 72  # inches: tick labels and the x label (at the default font sizes)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize="small", title_fontsize="small",
              bbox_transform=ax.transAxes + ScaledTranslation(0, -below, ax.figure.dpi_scale_trans), **legend)


def line_panels(x: Sequence[float], panels: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str,
                title: str = "", ylabels: Mapping[str, str] | None = None, caption: str = "",
                ymin: float | None = None, xticklabels: Sequence[str] | None = None,
                legend_title: str | None = None) -> Figure:
    """One panel per title, one line per label: ``panels[title][label] = y``; lines differ in colour,
    dash and hollow marker, each smaller than the last, so that coinciding ones stay visible.
    ``ylabels[title]`` (default: the title) labels a panel's y axis; ``ymin`` clamps its lower limit
    (e.g. 0 for barriers, which are >= 0); ``xticklabels`` names the ticks at ``x``; the legend (under
    the panel, so it hides no line) may have a ``legend_title`` defining its terms."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = panel_grid(len(panels))
    entries = max(len(lines) + bool(legend_title) for lines in panels.values())
    fig.set_figheight(fig.get_figheight() + 0.3 + 0.2 * entries)  # the legend under the panels
    for ax, (name, lines) in zip(axes, panels.items(), strict=True):
        for n, (label, y) in enumerate(lines.items()):
            marker, dash = LINE_STYLES[n % len(LINE_STYLES)]
            ax.plot(list(x), list(y), marker=marker, linestyle=dash, markersize=max(4, 10 - 3 * n),
                    markerfacecolor="none", markeredgewidth=1.5, color=f"C{n}", label=label, clip_on=False)
        ax.set(xlabel=xlabel, ylabel=(ylabels or {}).get(name, name))
        legend_below(ax, tick_lines=max(len(t.split("\n")) for t in xticklabels) if xticklabels else 1,
                     title=legend_title)
        if ymin is not None:
            ax.set_ylim(bottom=ymin, top=max(ax.get_ylim()[1], ymin + 1e-3))
        if xticklabels is not None:
            ax.set_xticks(list(x), list(xticklabels))
        elif all(float(v).is_integer() for v in x):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        readable_axes(ax, x=xticklabels is None)
    return label_figure(fig, title, caption)


def heatmap_panels(panels: Mapping[str, np.ndarray], labels: Sequence[str], title: str = "",
                   xlabel: str = "", ylabel: str = "", colorbar_labels: Mapping[str, str] | None = None,
                   vmin: float | None = None, caption: str = "", upper: bool = False,
                   columns: int | None = None) -> Figure:
    """One annotated heatmap per title of a square matrix indexed by ``labels`` (NaN = blank).

    Annotations and colour-bar ticks of a panel share the decimals its values need (:func:`decimals_for`);
    a constant panel's colour bar is that one value. With ``vmin`` (e.g. 0 for barriers) the colour scale
    starts there. ``upper``: the matrix is symmetric with a zero diagonal, so only cells (i, j), i < j, are
    drawn (rows 0..n-2, columns 1..n-1). ``columns``: panels per row (default all in one row).
    """
    import seaborn as sns

    fig, axes = panel_grid(len(panels), style="white", columns=columns)
    rows, cols = (list(labels)[:-1], list(labels)[1:]) if upper else (list(labels), list(labels))
    for ax, (name, matrix) in zip(axes, panels.items(), strict=True):
        z = np.asarray(matrix, dtype=float)
        if upper:
            z = np.where(np.triu(np.ones_like(z, dtype=bool), k=1), z, np.nan)[:-1, 1:]
        finite = z[np.isfinite(z)]
        lo = float(finite.min()) if finite.size else 0.0
        lo = min(lo, vmin) if vmin is not None else lo
        hi = float(finite.max()) if finite.size else lo
        places = decimals_for(finite.tolist())
        heat = sns.heatmap(z, annot=True, fmt=f".{places}f", square=True, cmap="viridis", ax=ax, vmin=lo,
                           vmax=hi if hi > lo else lo + 1.0, xticklabels=cols, yticklabels=rows,
                           annot_kws={"fontsize": "small"},
                           cbar_kws={"label": (colorbar_labels or {}).get(name, name)})
        colorbar_ticks(heat.collections[0].colorbar, lo, hi)
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
                   colorbar_labels: Mapping[str, str] | None = None, caption: str = "",
                   columns: int | None = None) -> Figure:
    """Filled contours of ``panels[title][iy][ix]`` over the grid ``xs`` x ``ys``, marking ``points``
    and the polygon through them (e.g. the triangle of three checkpoints, Garipov et al. 2018).

    Low values are dark, high values bright (viridis, as the heatmaps). Panels named in ``log_scale``
    get geometrically spaced levels where their values span more than a factor of 10 (losses may span
    orders of magnitude); colour-bar ticks are round and distinct (:func:`colorbar_ticks`).
    """
    fig, axes = panel_grid(len(panels), style="white", columns=columns)
    px, py = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    for ax, (name, grid) in zip(axes, panels.items(), strict=True):
        z = np.asarray(grid, dtype=float)
        finite = z[np.isfinite(z)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        log = name in log_scale and lo > 0 and hi > 10 * lo
        top = hi if hi > lo else lo + max(1.0, abs(lo)) * 1e-6  # contourf needs two levels
        levels = np.geomspace(lo, top, 24) if log else np.linspace(lo, top, 24)
        filled = ax.contourf(xs, ys, z, levels=levels, cmap="viridis")
        label = (colorbar_labels or {}).get(name, name)
        cbar = fig.colorbar(filled, ax=ax, label=label + (" (log-spaced colours)" if log else ""))
        colorbar_ticks(cbar, lo, hi, log=log)
        ax.plot(np.append(px, px[0]), np.append(py, py[0]), color="white", linewidth=1.2, linestyle="--")
        ax.scatter(px, py, color="red", edgecolor="white", zorder=3)
        for x, y, text in zip(px, py, point_labels, strict=True):
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), color="white", fontsize="small")
        ax.set(title=name, aspect="equal", xlabel=xlabel, ylabel=ylabel)
        readable_axes(ax)
    return label_figure(fig, title, caption)
