"""The run directory (docs/format.md), plus the hidden per-epoch resume state.

```
DIR/config.json  ticket.safetensors  results.csv
DIR/cycle_KK/particle_PP.safetensors  average.safetensors  metrics.json
DIR/.resume/...                     epoch-boundary training state (:mod:`training.resume`), deleted when a unit finishes
DIR/.lock                           held by the process writing the run (:mod:`core.artifacts.lock`)
```
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.artifacts.atomic import atomic_write_text
from core.artifacts.jsonfile import BadJSON, read_json
from core.errors import UserError

RESULTS_COLUMNS = ["cycle", "density", "sparsity", "average_test_acc", "average_test_loss",
                   "particle_test_acc_mean", "particle_test_acc_std", "ensemble_test_acc", "ensemble_test_loss",
                   "average_train_loss", "particles", "seconds"]


def particle_unit(cycle: int, particle: int) -> str:
    """The name of a particle's resume state (``.resume/UNIT.safetensors``)."""
    return f"cycle_{cycle:02d}_particle_{particle:02d}"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def ticket(self) -> Path:
        return self.root / "ticket.safetensors"

    @property
    def results(self) -> Path:
        return self.root / "results.csv"

    def cycle(self, k: int) -> Path:
        return self.root / f"cycle_{k:02d}"

    def particle(self, k: int, p: int) -> Path:
        return self.cycle(k) / f"particle_{p:02d}.safetensors"

    def average(self, k: int) -> Path:
        return self.cycle(k) / "average.safetensors"

    def metrics(self, k: int) -> Path:
        return self.cycle(k) / "metrics.json"

    def resume_state(self, unit: str) -> Path:
        return self.root / ".resume" / f"{unit}.safetensors"


def write_metrics(run: RunDir, k: int, metrics: dict[str, Any]) -> None:
    atomic_write_text(run.metrics(k), json.dumps(metrics, indent=2) + "\n")


# What :func:`results_row` reads from a cycle's metrics.json: key -> number, or a nested object's keys.
METRICS_NUMBERS = {"density": None, "sparsity": None, "seconds": None,
                   "average": ("test_acc", "test_loss", "train_loss"), "ensemble": ("test_acc", "test_loss")}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_metric(value: Any, key: str, name: str) -> bool:
    """A number, or null where a run whose targets are not class labels has none: every ``test_acc`` and the
    ensemble's loss (all of them null together, :func:`_metrics_problem`)."""
    return _is_number(value) or (value is None and (name == "test_acc" or key == "ensemble"))


def _metrics_problem(m: Any, k: int) -> str | None:
    """Why ``m`` is not cycle ``k``'s metrics as :func:`write_metrics` writes them, or None."""
    if not isinstance(m, dict):
        return f"holds a JSON {type(m).__name__}, not an object"
    if m.get("cycle") != k or isinstance(m.get("cycle"), bool):
        return f"its 'cycle' is {m.get('cycle')!r}, not {k}"
    for key, inner in METRICS_NUMBERS.items():
        value = m.get(key)
        if inner is None and not _is_number(value):
            return f"its {key!r} is {value!r}, not a number"
        if inner is not None and not (isinstance(value, dict) and all(i in value and _is_metric(value[i], key, i)
                                                                      for i in inner)):
            return f"its {key!r} is not an object with the numbers {', '.join(inner)}"
    particles = m.get("particles")
    if not (isinstance(particles, list) and particles
            and all(isinstance(q, dict) and "test_acc" in q and _is_metric(q["test_acc"], "particles", "test_acc")
                    for q in particles)):
        return "its 'particles' is not a non-empty list of objects with a number (or null) 'test_acc'"
    nulls = {m["average"]["test_acc"] is None, *(v is None for v in m["ensemble"].values()),
             *(q["test_acc"] is None for q in particles)}
    if len(nulls) > 1:
        return "some of its accuracies are null and others not (null everywhere only without class labels)"
    return None


def read_metrics(run: RunDir, k: int) -> dict[str, Any] | None:
    """Cycle ``k``'s metrics, or None if it has none; a damaged file is a :class:`UserError` that says how to
    recompute it (the cycle's particles are kept, so only averaging and evaluation run again)."""
    path = run.metrics(k)
    if not path.is_file():
        return None
    try:
        m = read_json(path)
        problem = _metrics_problem(m, k)
    except BadJSON as err:  # not JSON, not UTF-8, nested too deep, too large
        problem = f"is not JSON ({err})"
    if problem is not None:
        raise UserError(f"{path} is damaged ({problem}); delete {run.average(k)} and rerun with --resume to "
                        "average and evaluate that cycle again")
    return m


def results_row(m: dict[str, Any]) -> dict[str, Any]:
    """One ``results.csv`` row from a cycle's ``metrics.json``; a value it does not hold is left out (an empty
    cell): a run of :func:`training.integrations.cycles.swamp_cycles` knows accuracies and losses only from the
    caller's ``evaluate``, and no ensemble. Accuracies are None (an empty cell) where the run's targets are not
    class labels (its ``test_acc`` values are null).

    Example:
        >>> row = results_row({"cycle": 1, "density": 0.8, "sparsity": 0.2, "seconds": 3.0,
        ...                    "particles": [{"particle": 0, "test_acc": 0.5}, {"particle": 1, "test_acc": 0.7}]})
        >>> round(row["particle_test_acc_mean"], 6), row["particles"], "average_test_acc" in row
        (0.6, 2, False)
    """
    particles = m.get("particles", [])
    row = {key: m[key] for key in ("cycle", "density", "sparsity") if key in m}
    for group in ("average", "ensemble"):
        row.update({f"{group}_{key}": value for key, value in m.get(group, {}).items()
                    if f"{group}_{key}" in RESULTS_COLUMNS})
    accs = [p["test_acc"] for p in particles if "test_acc" in p]
    if accs and len(accs) == len(particles):  # None throughout where the targets are not class labels
        mean = std = None
        if None not in accs:
            mean = sum(accs) / len(accs)
            std = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else 0.0
        row["particle_test_acc_mean"], row["particle_test_acc_std"] = mean, std
    row["particles"] = len(particles)
    if "seconds" in m:
        row["seconds"] = m["seconds"]
    return {key: row[key] for key in RESULTS_COLUMNS if key in row}


def write_results(run: RunDir, metrics: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULTS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for m in metrics:
        writer.writerow(results_row(m))
    atomic_write_text(run.results, buf.getvalue())
