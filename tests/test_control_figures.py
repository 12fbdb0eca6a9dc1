"""analysis_notebooks/07_controls.ipynb and studies.control_figures: the notebook runs headless on a controls
JSON and what every figure draws is what the Markdown tables of ``studies.controls`` print for that JSON."""

from __future__ import annotations

import json
import os
import re
from itertools import combinations
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from core.errors import UserError
from studies import control_figures as cf
from studies import controls as sc

REPO = Path(__file__).resolve().parent.parent
FIGURES = ["controls_connectivity", "controls_hull", "controls_flatness", "controls_rewind",
           "controls_flatness_accuracy"]
MODELS = {"cnn1d": (0, 2), "mlp": (2,), "transformer1d": (2,)}  # model -> rewind points (the grid's is 2)
SEEDS, SPARSITY = tuple(range(6)), (0.0, 0.5, 0.75)  # sparsity per cycle; 6 seeds: the one rule decides


def controls_json(rng: np.random.Generator) -> dict:
    """The JSON of ``python -m studies.controls ROOT --json OUT`` for 3 models x IMP, SWAMP x 6 seeds x 3
    cycles (SWAMP: 3 particles), cnn1d also at rewind point 0; every row with the keys ``measure`` writes.
    cnn1d has BatchNorm (BN-invariant traces), transformer1d cannot be aligned; many particle barriers are 0;
    SWAMP's cnn1d trace is 20% below IMP's on every seed (the one rule: holds), the others are mixed."""
    rows: dict[str, list] = {k: [] for k in ("accuracy", "particle_pairs", "seed_pairs", "particle_hulls",
                                             "seed_hulls", "flatness")}
    for model, rewinds in MODELS.items():
        aligned = model != "transformer1d"
        for rewind in rewinds:
            for method in ("imp", "swamp"):
                for seed in SEEDS:
                    for cycle, sparsity in enumerate(SPARSITY):
                        rows["accuracy"].append({"model": model, "method": method, "seed": seed, "rewind": rewind,
                                                 "cycle": cycle, "sparsity": sparsity,
                                                 "test_acc": float(rng.uniform(0.9, 0.97)),
                                                 "test_loss": float(rng.uniform(0.1, 0.3))})
            for seed in SEEDS:
                for cycle, sparsity in enumerate(SPARSITY):
                    for pair in combinations(range(3), 2):
                        zero = rng.random() < 0.4
                        height = 0.2 if rewind == 0 and cycle == 0 else 1e-3
                        rows["particle_pairs"].append({
                            "model": model, "seed": seed, "rewind": rewind, "cycle": cycle, "pair": list(pair),
                            "sparsity": sparsity, "loss": 0.0 if zero else float(rng.exponential(height)),
                            "error": 0.0 if zero else float(rng.exponential(height / 10)),
                            "aligned_loss": None, "aligned_error": None})
        for cycle, sparsity in enumerate(SPARSITY):
            for method in ("imp", "swamp"):
                for pair in combinations(SEEDS, 2):
                    rows["seed_pairs"].append({
                        "model": model, "method": method, "cycle": cycle, "seeds": list(pair), "sparsity": sparsity,
                        "loss": float(rng.uniform(1, 2)), "error": float(rng.uniform(0.3, 0.6)),
                        "aligned_loss": float(rng.uniform(0.05, 0.3)) if aligned else None,
                        "aligned_error": float(rng.uniform(0.02, 0.1)) if aligned else None})
                rows["seed_hulls"].append({
                    "model": model, "method": method, "cycle": cycle, "seeds": list(SEEDS), "sparsity": sparsity,
                    "excess_mean": float(rng.uniform(0.5, 1.5)), "excess_max": float(rng.uniform(1.5, 2.5)),
                    "frac_below": 0.03125, "hull_loss_mean": float(rng.uniform(0.6, 1.6))})
            for seed in SEEDS:
                rows["particle_hulls"].append({
                    "model": model, "seed": seed, "cycle": cycle, "sparsity": sparsity,
                    "excess_mean": -float(rng.uniform(1e-3, 1e-2)), "excess_max": -float(rng.uniform(0, 1e-3)),
                    "frac_below": 1.0, "hull_loss_mean": float(rng.uniform(0.1, 0.2))})
                imp = rng.uniform(50, 100, size=3)
                for method in ("imp", "swamp"):
                    factor = 1.0 if method == "imp" else (0.8 if model == "cnn1d" else rng.normal(1, 0.05))
                    raw, normalized, channel = factor * imp * rng.normal(1, 0.02, size=3) * [1, 20, 0.5]
                    bn = model == "cnn1d"
                    rows["flatness"].append({
                        "model": model, "method": method, "seed": seed, "cycle": cycle, "sparsity": sparsity,
                        "test_acc": float(rng.uniform(0.9, 0.97)), "raw": float(raw), "raw_stderr": 0.05 * raw,
                        "normalized": float(normalized) if bn else None,
                        "normalized_stderr": 0.05 * normalized if bn else None,
                        "channel": float(channel) if bn else None, "channel_stderr": 0.05 * channel if bn else None,
                        "other": 1.0, "layers": ["features.0"] if bn else []})
    controls = sc.Controls(sc.Settings(), rows, {"transformer1d": "cannot align: node 'view' calls .view()"},
                           {"flatness": 1.0})
    return {**controls.to_json(), "correlations": sc.correlation_rows(controls)}


@pytest.fixture(scope="module")
def controls_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("controls") / "controls.json"
    path.write_text(json.dumps(controls_json(np.random.default_rng(17))))
    return path


# Appended to the notebook under test: what every saved figure drew, as JSON on the last output line.
DRAWN = """import json


def _panel(ax):
    bars = []
    for c in ax.containers:
        line, _, cols = c.lines
        segments = cols[0].get_segments() if cols else []
        bars.append({"label": c.get_label(), "x": [float(v) for v in line.get_xdata()],
                     "y": [float(v) for v in line.get_ydata()],
                     "low": [float(s[0][1]) for s in segments], "high": [float(s[1][1]) for s in segments]})
    return {"title": ax.get_title(), "bars": bars,
            "lines": [{"label": ln.get_label(), "x": [float(v) for v in ln.get_xdata()],
                       "y": [float(v) for v in ln.get_ydata()]} for ln in ax.lines],
            "scattered": sum(len(c.get_offsets()) for c in ax.collections if type(c).__name__ == "PathCollection")}


print(json.dumps({name: [_panel(ax) for ax in fig.axes] for name, fig in drawn.items()}))"""


def _table(report: str, title: str) -> list[dict[str, str]]:
    """The rows of the Markdown table under ``### title``, as {column: cell}."""
    block = report.split(f"### {title}\n", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    head = [c.strip() for c in block[0].strip("|").split("|")]
    return [dict(zip(head, [c.strip() for c in line.strip("|").split("|")], strict=True)) for line in block[2:]]


def _mean_std(cell: str) -> tuple[float, float | None]:
    """``"m ± s (n)"`` or ``"m"`` -> (m, s or None)."""
    parts = cell.split(" (")[0].split(" ± ")
    return float(parts[0]), float(parts[1]) if len(parts) > 1 else None


def _assert_cell(cell: str, mean: float, high: float | None, digits: int, where: object) -> None:
    """A drawn mean (and the upper end of its error bar) equals the table's mean +- std to its digits."""
    table_mean, table_std = _mean_std(cell)
    assert float(f"{mean:.{digits}f}") == table_mean, (where, cell, mean)
    if high is not None and table_std is not None:
        assert float(f"{high - mean:.{digits}f}") == table_std, (where, cell, high)


@pytest.fixture(scope="module")
def drawn(controls_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The notebook run headless on the controls JSON: what each figure drew, and the figures' folder."""
    folder = tmp_path_factory.mktemp("figures")
    nb = nbformat.read(REPO / "analysis_notebooks" / "07_controls.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(DRAWN))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SWAMP_CONTROLS", str(controls_file))
        env.setenv("SWAMP_FIGURES", str(folder))
        env.setenv("MPLBACKEND", "Agg")
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(REPO / "analysis_notebooks")}}).execute()
    return json.loads(nb.cells[-1].outputs[-1]["text"].strip().splitlines()[-1]), folder


@pytest.fixture(scope="module")
def report(controls_file: Path) -> str:
    return "\n\n".join(sc.report(cf.load_controls(controls_file)))


def test_notebook_writes_every_figure_as_png_and_pdf(drawn):
    figures, folder = drawn
    assert sorted(figures) == sorted(FIGURES)
    for name in FIGURES:
        assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (folder / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("figure, title, columns, digits", [
    ("controls_connectivity", "Connectivity: test loss barrier",
     {"SWAMP particle pairs": "SWAMP particle pairs (seeds)", **{c: c for c in (
         "SWAMP seed pairs, raw", "SWAMP seed pairs, aligned", "IMP seed pairs, raw", "IMP seed pairs, aligned")}}, 4),
    ("controls_hull", "Hull (test loss)",
     {c: c for c in ("SWAMP particles (per seed)", "SWAMP seeds", "IMP seeds")}, 4),
])
def test_sparsity_curves_are_the_report_cells(drawn, report, figure, title, columns, digits):
    """Every point and error bar of every panel (a model) is its table cell (model, sparsity, series), and
    every cell that is not n/a is drawn; error bars are clipped at 0 only where the quantity is >= 0."""
    rows = [r for r in _table(report, title) if r.get("measure", "mean hull loss − mean vertex loss")
            == "mean hull loss − mean vertex loss"]
    cells = {(r["model"], r["sparsity"], col): r[col] for r in rows for col in columns.values() if r[col] != "n/a"}
    checked = set()
    for panel in drawn[0][figure]:
        model = panel["title"].split("\n")[0]
        for bar in panel["bars"]:
            for x, y, low, high in zip(bar["x"], bar["y"], bar["low"], bar["high"], strict=True):
                key = (model, f"{x:.1f}%", columns[bar["label"]])
                _assert_cell(cells[key], y, high, digits, key)
                std = high - y
                assert low == pytest.approx(y - (min(std, y) if figure == "controls_connectivity" else std), abs=1e-12)
                checked.add(key)
    assert checked == set(cells)
    unaligned = [p["title"] for p in drawn[0][figure] if p["title"].startswith("transformer1d")]
    assert figure != "controls_connectivity" or "weight matching refuses" in unaligned[0]


VERDICT = "SWAMP flatter (one rule, delta 10%)"


def test_flatness_panels_are_the_paired_differences_relative_to_imp(drawn, report, controls_file):
    """Drawn: 100 (SWAMP − IMP) / IMP's mean, +- 100 std / IMP's mean, where the report's SWAMP − IMP and IMP
    cells are the frame's; filled markers exactly where the report's one-rule column says "holds"."""
    rows = _table(report, "Flatness: SWAMP against IMP")
    cells = {(r["model"], r["sparsity"], r["measure"]): r for r in rows if r["sparsity"] != "all"}
    frame = cf.flatness_frame(cf.load_controls(controls_file))
    frame = frame.set_index(["model", "measure", frame["sparsity"].map("{:.1f}%".format)])
    checked = 0
    for panel in drawn[0]["controls_flatness"]:
        model = panel["title"].split("\n")[0]
        missing = {r["measure"] for r in rows if r["model"] == model and r["sparsity"] == "all"}
        assert ("BN-invariant: n/a" in panel["title"]) == bool(missing)
        assert {b["label"] for b in panel["bars"]} == {r["measure"] for r in rows if r["model"] == model} - missing
        for bar in panel["bars"]:
            filled = next(ln for ln in panel["lines"] if ln["label"] == f"_holds: {bar['label']}")
            for x, y, high in zip(bar["x"], bar["y"], bar["high"], strict=True):
                row, point = cells[(model, f"{x:.1f}%", bar["label"])], frame.loc[(model, bar["label"], f"{x:.1f}%")]
                _assert_cell(row["IMP"], point["imp_mean"], None, 2, row)
                _assert_cell(row["SWAMP − IMP"], point["mean"], point["mean"] + point["std"], 2, row)
                assert y == pytest.approx(100 * point["mean"] / point["imp_mean"], rel=1e-12)
                assert high - y == pytest.approx(100 * point["std"] / point["imp_mean"], rel=1e-9)
                assert (x in filled["x"]) == (row[VERDICT] == "holds"), row
                checked += 1
    assert checked == len(cells)
    assert {r[VERDICT] for r in cells.values()} >= {"holds", "does not hold"}, "both marker kinds are exercised"


def test_rewind_panels_are_the_rewind_table(drawn, report):
    rows = _table(report, "Rewind point")
    cells = {(r["model"], int(r["rewind epochs"]), r["sparsity"]): r for r in rows}
    columns = dict(zip(cf.REWIND_QUANTITIES, [("particle-pair loss barrier", 4), ("particle-pair error barrier (%)", 2),
                                              ("SWAMP − IMP (points)", 2)], strict=True))
    checked = 0
    for panel in drawn[0]["controls_rewind"]:
        model, quantity = panel["title"].split(": ", 1)
        column, digits = columns[quantity]
        for bar in panel["bars"]:
            sparsity = bar["label"].removeprefix("sparsity ")
            for x, y, high in zip(bar["x"], bar["y"], bar["high"], strict=True):
                _assert_cell(cells[(model, int(x), sparsity)][column], y, high, digits, (quantity, x, sparsity))
                checked += 1
    assert checked == 3 * len(cells) and {r["model"] for r in rows} == {"cnn1d"}, "only cnn1d has 2 rewind points"


def test_flatness_accuracy_titles_give_the_reports_spearman_rho(drawn, report):
    rows = {(r["model"], r["measure"]): r for r in _table(report, "Flatness against test accuracy")}
    panels = drawn[0]["controls_flatness_accuracy"]
    assert len(panels) == len(rows) == 5
    for panel in panels:
        head, numbers = panel["title"].split("\n")
        model, measure = head.split(", ", 1)
        found = re.fullmatch(r"Spearman ρ = (\S+) \(p = (\S+)\), within cycles (\S+) \(p = (\S+)\)", numbers)
        row = rows[(model, measure)]
        assert f"{found[1]} ({found[2]})" == row["Spearman rho with test accuracy (p)"]
        assert f"{found[3]} ({found[4]})" == row["within-cycle rank correlation (p)"]
        assert panel["scattered"] == int(row["points"])


def test_load_controls_refuses_what_is_not_a_controls_json_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    rows = json.dumps({kind: [] for kind in ("accuracy", "particle_pairs", "seed_pairs", "particle_hulls",
                                             "seed_hulls", "flatness")})
    for text, words in ((None, "does not exist"), ("{", "is not JSON"), ('{"rows": {}}', "is not the JSON of"),
                        (f'{{"settings": {{"spin": 1}}, "rows": {rows}, "unalignable": {{}}}}', "does not know")):
        if text is not None:
            bad.write_text(text)
        with pytest.raises(UserError) as info:
            cf.load_controls(bad)
        assert words in str(info.value) and "\n" not in str(info.value)
        assert "python -m studies.controls ROOT --json" in str(info.value)


def test_controls_across_realisations_apply_the_verdict_rule_to_each_paired_difference(tmp_path, capsys):
    """Two realisations of one controls grid: every (quantity, model, sparsity) row holds each realisation's
    SWAMP − IMP mean and std over seeds, computed here by hand from the JSON rows, and the rule's verdict;
    the CLI prints the library's table."""
    from studies.controls import realisations as cr
    from studies.verdict import Claim, paired_verdicts

    first, second = controls_json(np.random.default_rng(1)), controls_json(np.random.default_rng(2))
    paths = [tmp_path / "t1.json", tmp_path / "t2.json"]
    for path, body in zip(paths, (first, second), strict=True):
        path.write_text(json.dumps(body))
    rows = cr.realisation_rows([cr.load_controls(p) for p in paths])
    keys = {(r["quantity"], r["model"], round(r["sparsity"], 3)) for r in rows}
    assert ("test accuracy (points)", "mlp", 0.75) in keys and ("raw Hessian trace (% of IMP's)", "cnn1d", 0.0) in keys
    assert ("BN-invariant trace, per layer (% of IMP's)", "mlp", 0.0) not in keys  # no BatchNorm: no such trace

    def by_hand(body: dict, model: str, cycle: int) -> np.ndarray:
        acc = {(r["method"], r["seed"]): r["test_acc"] for r in body["rows"]["accuracy"]
               if r["model"] == model and r["cycle"] == cycle and r["rewind"] == 2}
        return np.array([100 * (acc["swamp", s] - acc["imp", s]) for s in SEEDS])

    accuracy = [r for r in rows if r["quantity"] == "test accuracy (points)"]
    row = next(r for r in accuracy if r["model"] == "mlp" and r["sparsity"] == SPARSITY[2])
    expected = [by_hand(body, "mlp", 2) for body in (first, second)]
    assert [x for e in row["effects"] for x in e[:2]] == pytest.approx(
        [x for d in expected for x in (d.mean(), d.std(ddof=1))])
    family = {f"{r['model']} | {100 * r['sparsity']:.1f}%": (by_hand(first, r["model"], SPARSITY.index(r["sparsity"]))
                                                            + by_hand(second, r["model"],
                                                                      SPARSITY.index(r["sparsity"]))) / 2
              for r in accuracy}
    judged = paired_verdicts(family, Claim("greater", 0.5))  # Holm over the accuracy family, mean over paths
    assert [r["verdict"].outcome for r in accuracy] == [v.outcome for v in judged]
    assert row["verdict"].p_holm == pytest.approx(judged[accuracy.index(row)].p_holm)
    assert row["verdict"].n == len(SEEDS)
    trace = next(r for r in rows if r["quantity"].startswith("raw Hessian trace") and r["model"] == "cnn1d")
    assert trace["verdict"].label.startswith("cnn1d") and "%" in trace["quantity"], "traces in % of IMP's"
    assert cr.main([str(p) for p in paths] + ["--labels", "a,b"]) == 0
    assert capsys.readouterr().out.strip() == cr.realisation_table([cr.load_controls(p) for p in paths], ["a", "b"])
    with pytest.raises(UserError, match="at least two realisations"):
        cr.realisation_rows([cr.load_controls(paths[0])])
