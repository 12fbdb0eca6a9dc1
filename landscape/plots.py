"""Generic seaborn/matplotlib figures of the landscape tools, built without pyplot's global state.

Every function returns a :class:`matplotlib.figure.Figure` (notebooks display it, the CLIs pass it
to :func:`save_figure`), one panel per entry of an ordered ``{title: data}`` mapping.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from training.atomic import atomic_write_bytes

PANEL_SIZE = (4.2, 3.4)


def panel_grid(count: int, style: str = "whitegrid", size: tuple[float, float] = PANEL_SIZE) -> tuple[Figure, list]:
    """A figure of ``count`` panels side by side, each ``size`` inches, in the seaborn ``style``."""
    with sns.axes_style(style):
        fig = Figure(figsize=(size[0] * count, size[1]), layout="constrained")
        axes = fig.subplots(1, count, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig: Figure, path: str | Path, dpi: int = 150, format: str = "png") -> None:
    """Render ``fig`` in memory (PNG, or another matplotlib ``format`` such as pdf) and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format=format, dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def line_panels(x: Sequence[float], panels: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str,
                title: str = "") -> Figure:
    """One panel per title, one line (with markers) per label: ``panels[title][label] = y``."""
    fig, axes = panel_grid(len(panels))
    for ax, (name, lines) in zip(axes, panels.items(), strict=True):
        for label, y in lines.items():
            sns.lineplot(x=list(x), y=list(y), marker="o", label=label, ax=ax)
        ax.set(xlabel=xlabel, ylabel=name)
        if all(float(v).is_integer() for v in x):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig


def heatmap_panels(panels: Mapping[str, np.ndarray], labels: Sequence[str], title: str = "") -> Figure:
    """One annotated heatmap per title of a square matrix indexed by ``labels`` (NaN = blank)."""
    fig, axes = panel_grid(len(panels), style="white")
    for ax, (name, matrix) in zip(axes, panels.items(), strict=True):
        sns.heatmap(np.asarray(matrix, dtype=float), annot=True, fmt=".3g", square=True, cmap="viridis",
                    xticklabels=list(labels), yticklabels=list(labels), ax=ax)
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    return fig


def histogram_panels(panels: Mapping[str, Sequence[float]], markers: Mapping[str, Mapping[str, float]],
                     xlabel: str, title: str = "") -> Figure:
    """A histogram of values per title, with labelled vertical lines at ``markers[title]``."""
    fig, axes = panel_grid(len(panels))
    palette = sns.color_palette("deep")
    for ax, (name, values) in zip(axes, panels.items(), strict=True):
        sns.histplot(x=list(values), ax=ax, color=palette[0], label="hull samples")
        for i, (label, value) in enumerate(markers.get(name, {}).items()):
            ax.axvline(value, color=palette[(i + 1) % len(palette)], linestyle="--", label=label)
        ax.set(xlabel=xlabel, title=name)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def contour_panels(xs: Sequence[float], ys: Sequence[float], panels: Mapping[str, np.ndarray],
                   points: Sequence[tuple[float, float]], point_labels: Sequence[str], title: str = "",
                   log_scale: Sequence[str] = ()) -> Figure:
    """Filled contours of ``panels[title][iy][ix]`` over the grid ``xs`` x ``ys``, marking ``points``
    and the polygon through them (e.g. the triangle of three checkpoints, Garipov et al. 2018).

    Panels named in ``log_scale`` get geometrically spaced levels (losses span orders of magnitude).
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
        filled = ax.contourf(xs, ys, z, levels=levels, cmap="viridis_r")
        fig.colorbar(filled, ax=ax, format="%.3g")
        ax.plot(np.append(px, px[0]), np.append(py, py[0]), color="white", linewidth=1.2, linestyle="--")
        ax.scatter(px, py, color="red", edgecolor="white", zorder=3)
        for x, y, label in zip(px, py, point_labels, strict=True):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), color="white", fontsize="small")
        ax.set(title=name, aspect="equal")
    if title:
        fig.suptitle(title)
    return fig
