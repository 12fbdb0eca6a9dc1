"""The loss on the plane through three checkpoints (Garipov et al. 2018, "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs", section 2 and figure 1).

With u = theta_2 - theta_1 and w = theta_3 - theta_1 (over the parameters), Gram-Schmidt gives the
orthonormal basis e_1 = u / |u|, e_2 = (w - <w, e_1> e_1) / |w - <w, e_1> e_1|, and the point (x, y) is
theta_1 + x e_1 + y e_2. The checkpoints sit at P_1 = (0, 0), P_2 = (|u|, 0), P_3 = (<w, e_1>, |w_perp|).
Every point is the affine combination sum_i c_i theta_i with barycentric coordinates

    c_3 = y / P_3y,   c_2 = (x - c_3 P_3x) / P_2x,   c_1 = 1 - c_2 - c_3,

so the plane is evaluated by :class:`landscape.tools.artifacts.CheckpointSet` (BatchNorm handled as
everywhere else; with ``bn_recal=0`` the stored statistics follow the same coefficients, which may
extrapolate badly outside the triangle) and each P_i gives back theta_i exactly.

The grid has R x R points over the triangle's bounding box widened on each side by ``margin`` times
its width (height). A scan can be long: with a ``partial`` file the points computed so far are kept
there (written atomically every few points and on interruption) and a rerun with the same
checkpoints and settings continues from them; the file is removed when the scan completes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.artifacts.atomic import atomic_write_text
from core.artifacts.jsonfile import BadJSON, read_json
from core.errors import LibraryArgumentError, UserError
from core.evaluate import Evaluation
from core.options import to_json
from landscape.connectivity import plane_geometry
from landscape.tools.artifacts import (
    TEST_SPLIT,
    CheckpointLike,
    CheckpointSet,
    EvalOptions,
    MaskInfo,
    load_compatible,
    shared_mask_or_refuse,
)
from landscape.tools.cli import MAX_RESOLUTION, check_at_most

SAVE_EVERY = 10  # grid points between two writes of the partial file


@dataclass(frozen=True)
class PlaneResult:
    """Loss and accuracy on the grid: ``grids[split]["loss"][iy][ix]`` at (xs[ix], ys[iy])."""

    checkpoints: tuple[str, ...]
    vertices: tuple[tuple[float, float], ...]
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    margin: float
    grids: dict[str, dict[str, np.ndarray]]
    bn: str
    mask: MaskInfo
    resumed: int

    def to_json(self) -> dict:
        return {"checkpoints": list(self.checkpoints), "basis": "Gram-Schmidt of (C2 - C1, C3 - C1) over the "
                "parameters (Garipov et al. 2018)", "vertices": [list(v) for v in self.vertices],
                "resolution": len(self.xs), "margin": self.margin, "xs": list(self.xs), "ys": list(self.ys),
                **{s: {k: v.tolist() for k, v in g.items()} for s, g in self.grids.items()},
                "bn": self.bn, "mask": self.mask.to_json(), "resumed_points": self.resumed}


def _identity(ckpts: Sequence, resolution: int, margin: float, options: EvalOptions) -> dict:
    """What a partial scan must match to be continued (files by path, size and modification time)."""
    files = []
    for c in ckpts:
        st = os.stat(c.path) if os.path.exists(c.path) else None
        files.append([os.path.abspath(c.path), st.st_size if st else None, st.st_mtime_ns if st else None])
    settings = {k: v for k, v in to_json(options).items() if k not in ("progress", "device", "trust_code")}
    return {"checkpoints": files, "resolution": resolution, "margin": margin, "options": settings}


def _load_partial(path: Path | None, identity: dict) -> dict[int, dict[str, Evaluation]]:
    """Points of an earlier scan with the same identity; nothing if absent, unreadable or stale."""
    if path is None or not path.is_file():
        return {}
    try:
        saved = read_json(path)
        if saved["identity"] != json.loads(json.dumps(identity)):
            return {}
        return {int(i): {s: Evaluation(*v) for s, v in point.items()} for i, point in saved["points"].items()}
    except (OSError, BadJSON, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _save_partial(path: Path, identity: dict, points: dict[int, dict[str, Evaluation]]) -> None:
    body = {str(i): {s: [e.loss, e.acc] for s, e in point.items()} for i, point in points.items()}
    atomic_write_text(path, json.dumps({"identity": identity, "points": body}))


def checkpoint_plane(checkpoints: Sequence[CheckpointLike], resolution: int = 21, margin: float = 0.2,
               options: EvalOptions = TEST_SPLIT, allow_mask_union: bool = False,
               partial: Path | None = None) -> PlaneResult:
    """:func:`landscape.connectivity.loss_plane` for three checkpoint files, on ``options.splits``, with a
    resumable partial scan: the R x R grid of the plane through them."""
    if len(checkpoints) != 3:
        raise UserError(f"a plane needs exactly three checkpoints, got {len(checkpoints)}")
    if resolution < 2:
        raise UserError("--resolution must be at least 2")
    check_at_most(resolution, MAX_RESOLUTION, "--resolution")
    if not math.isfinite(margin) or margin < 0:
        raise UserError(f"--margin must be a finite number >= 0, not {margin}")
    ckpts = load_compatible(checkpoints)
    mask = shared_mask_or_refuse(ckpts, allow_mask_union)
    inputs = CheckpointSet(ckpts, options)
    geometry = plane_geometry(inputs.combination.displacement_gram())
    xs, ys = geometry.grid(resolution, margin)
    rows = [geometry.coefficients(x, y) for y in ys for x in xs]
    identity = _identity(ckpts, resolution, margin, options)
    points = _load_partial(partial, identity)
    resumed = len(points)

    def keep(done: dict[int, dict[str, Evaluation]]) -> None:
        if partial is not None and len(done) % SAVE_EVERY == 0:
            _save_partial(partial, identity, done)

    try:
        values = inputs.scan(rows, desc="plane", results=points, on_point=keep)
    except (UserError, LibraryArgumentError):  # a refusal: the same scan would be refused again; nothing is kept
        raise
    except BaseException:  # an interruption: the points computed so far are kept for a rerun
        if partial is not None and len(points) > resumed:
            _save_partial(partial, identity, points)
        raise
    if partial is not None:
        partial.unlink(missing_ok=True)
    shape = (resolution, resolution)
    grids = {s: {"loss": np.reshape(v.loss, shape), "acc": np.reshape(v.acc, shape)} for s, v in values.items()}
    return PlaneResult(tuple(c.path for c in ckpts), geometry.vertices, tuple(float(x) for x in xs),
                       tuple(float(y) for y in ys), margin, grids, inputs.bn, mask, resumed)
