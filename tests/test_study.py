"""The study driver, its analysis step and the figure notebooks, on one ``--quick`` study."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import DATA_DIR
from nbclient import NotebookClient
from safetensors.torch import load_file
from scipy import stats

from core.artifacts.lock import exclusive
from core.errors import UserError, run_cli
from studies import budget as sb
from studies import tables as st
from studies.analyse import analyse_study
from studies.analyse import main as analysis_main
from studies.claims import count_below, extremes, paired, paired_table, relative_frame
from studies.grid.cli import MANIFEST, default_plan, quick_plan, run_study
from studies.grid.cli import main as study_main
from studies.manifest import method_roles
from studies.report import study_report
from studies.verdict import Claim, paired_verdicts

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "analysis_notebooks"
FIGURES = {
    "01_accuracy_vs_sparsity": ["accuracy_vs_sparsity"],
    "02_linear_connectivity": ["linear_connectivity"],
    "03_convex_hull": ["convex_hull", "loss_plane_cycle_00", "loss_plane_cycle_01"],
    "04_flatness": ["flatness"],
    "05_ablations": ["ablations"],
}
QUICK_ARGS = ["--quick", "--data-dir", str(DATA_DIR), "--no-progress"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick study (all methods, two seeds, two cycles) with its analysis."""
    root = tmp_path_factory.mktemp("study") / "quick"
    assert study_main([*QUICK_ARGS, "--out", str(root)]) == 0
    assert analysis_main([str(root), "--data-dir", str(DATA_DIR)]) == 0
    return root


def test_manifest_lists_every_method_and_seed_as_a_finished_run_directory(study):
    manifest = json.loads((study / MANIFEST).read_text())
    methods = {m["name"] for m in manifest["methods"]}
    assert {"imp", "swa", "particles", "swamp-plus", "oneshot-magnitude", "oneshot-random"} <= methods
    assert any(m.startswith("swamp-n") for m in methods)
    assert len(manifest["seeds"]) >= 2
    assert len(manifest["runs"]) == len(methods) * len(manifest["seeds"])
    for run in manifest["runs"]:
        assert run["status"] == "done" and run["cycles_done"] == manifest["settings"]["cycles"]
        assert {"method", "seed", "particles", "path"} <= set(run)
        config = json.loads((study / run["path"] / "config.json").read_text())
        assert (config["seed"], config["particles"]) == (run["seed"], run["particles"])
        assert (study / run["path"] / "cycle_01" / "average.safetensors").is_file()


def test_oneshot_prunes_the_dense_imp_solution_in_one_step(study):
    imp, oneshot = study / "runs" / "imp-s0", study / "runs" / "oneshot-magnitude-s0"
    assert json.loads((oneshot / "config.json").read_text())["pruning_schedule"] == "one-shot"
    dense_imp = load_file(imp / "cycle_00" / "average.safetensors")
    dense_oneshot = load_file(oneshot / "cycle_00" / "average.safetensors")
    assert all((dense_imp[k] == dense_oneshot[k]).all() for k in dense_imp)  # same seeds: same dense training
    metrics = json.loads((oneshot / "cycle_01" / "metrics.json").read_text())
    assert metrics["density"] == pytest.approx(0.8, abs=1e-3)


def test_rerun_skips_finished_sub_runs_and_resumes_an_unfinished_one(study, capsys):
    run = study / "runs" / "imp-s1"
    before = (run / "cycle_01" / "average.safetensors").read_bytes()
    seconds = {r["name"]: r["seconds"] for r in json.loads((study / MANIFEST).read_text())["runs"]}
    shutil.rmtree(run / "cycle_01")  # as if killed during the last cycle
    capsys.readouterr()
    assert study_main([*QUICK_ARGS, "--out", str(study)]) == 0
    out = capsys.readouterr().out
    assert "run  imp-s1 (1/2 cycles done)" in out
    assert out.count("skip ") == len(json.loads((study / MANIFEST).read_text())["runs"]) - 1
    assert (run / "cycle_01" / "average.safetensors").read_bytes() == before  # deterministic resume
    after = {r["name"]: r["seconds"] for r in json.loads((study / MANIFEST).read_text())["runs"]}
    assert all(after[n] == seconds[n] for n in seconds if n != "imp-s1") and after["imp-s1"] > seconds["imp-s1"]
    assert analyse_study(study, data_dir=str(DATA_DIR)) == []  # nothing left to measure


def test_a_study_cannot_be_continued_with_another_grid(study):
    for plan in (quick_plan("mnist1d", seeds=(0,)), quick_plan("mnist1d", seeds=(1, 0, 2)),
                 quick_plan("mnist1d-mlp")):
        with pytest.raises(UserError, match="other settings"):
            run_study(study, plan)


def _without_roles(manifest: dict) -> dict:
    """``manifest`` as studies wrote it before methods recorded their role."""
    return {**manifest, "methods": [{k: v for k, v in m.items() if k != "role"} for m in manifest["methods"]]}


def test_roles_are_recorded_and_an_old_manifest_gets_the_same_ones():
    for plan in (default_plan("mnist1d"), quick_plan("mnist1d")):
        body = json.loads(json.dumps(plan.to_json()))
        roles = method_roles(body)
        assert roles.of == {m["name"]: m["role"] for m in body["methods"]}
        assert method_roles(_without_roles(body)) == roles
    full = default_plan("mnist1d").to_json()
    roles = method_roles(full)
    assert roles["swamp"] == "swamp-n4" and roles.methods("swamp-n") == ["swamp-n2", "swamp-n8"]
    assert roles.methods("oneshot") == ["oneshot-magnitude", "oneshot-random"]
    assert [roles[r] for r in ("imp", "swa", "particles", "swamp-plus")] == ["imp", "swa", "particles", "swamp-plus"]
    without_central = {**full, "methods": [m for m in full["methods"] if m["name"] != "swamp-n4"]}
    assert method_roles(without_central)["swamp"] is None, "recorded roles are never reassigned"
    assert method_roles(without_central).methods("swamp-n") == ["swamp-n2", "swamp-n8"]
    old = _without_roles(without_central)
    assert method_roles(old)["swamp"] == "swamp-n2", "an old manifest: its first swamp-n arm, as its grid listed"


def test_a_study_started_before_roles_is_analysed_and_continued_as_the_same_plan(study, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(study, old)
    manifest = json.loads((old / MANIFEST).read_text())
    (old / MANIFEST).write_text(json.dumps(_without_roles(manifest)))
    assert st.roles(old) == st.roles(study)
    assert analyse_study(old, data_dir=str(DATA_DIR)) == [], "the same measurements as before"
    assert study_report(old) == study_report(study)
    capsys.readouterr()
    assert study_main([*QUICK_ARGS, "--out", str(old)]) == 0, "not a study with other settings"
    assert capsys.readouterr().out.count("skip ") == len(manifest["runs"])
    assert json.loads((old / MANIFEST).read_text())["methods"] == manifest["methods"], "roles recorded now"


def test_a_finished_study_gains_seeds_and_runs_only_their_sub_runs(study, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    capsys.readouterr()
    assert study_main([*QUICK_ARGS, "--out", str(copy), "--seeds", "0,1,2"]) == 0
    started = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("run ")]
    manifest = json.loads((copy / MANIFEST).read_text())
    assert manifest["seeds"] == [0, 1, 2] and all(r["status"] == "done" for r in manifest["runs"])
    assert sorted(started) == sorted(r["name"] for r in manifest["runs"] if r["seed"] == 2)
    written = analyse_study(copy, data_dir=str(DATA_DIR))
    assert written and all(p.parent.name.endswith("-s2") for p in written)


def test_jobs_train_sub_runs_in_parallel_processes_with_the_same_checkpoints(study, tmp_path):
    root = tmp_path / "parallel"
    assert study_main([*QUICK_ARGS, "--out", str(root), "--methods", "imp,swamp-n3", "--seeds", "0",
                       "--jobs", "2"]) == 0
    manifest = json.loads((root / MANIFEST).read_text())
    assert [(r["name"], r["status"]) for r in manifest["runs"]] == [("imp-s0", "done"), ("swamp-n3-s0", "done")]
    for name in ("imp-s0", "swamp-n3-s0"):
        files = sorted((study / "runs" / name).rglob("*.safetensors"))
        assert files
        for f in files:
            assert (root / f.relative_to(study)).read_bytes() == f.read_bytes(), f


def test_analysis_jobs_compute_the_same_measurements_in_parallel_processes(study, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    shutil.rmtree(copy / "analysis")
    # python -m studies.controls ran first: its cache is all analysis/ holds, which the analysis accepts and keeps
    (copy / "analysis" / "controls").mkdir(parents=True)
    (copy / "analysis" / "controls" / "settings.json").write_text("{}")
    assert analysis_main([str(copy), "--data-dir", str(DATA_DIR), "--jobs", "2", "--no-progress"]) == 0
    assert (copy / "analysis" / "controls" / "settings.json").read_text() == "{}"
    ours = sorted((study / "analysis").rglob("*.json"))
    assert len(ours) > 10 and [p.relative_to(study) for p in ours] == \
        [p.relative_to(copy) for p in sorted((copy / "analysis").rglob("*.json")) if "controls" not in p.parts]
    for path in ours:
        mine = json.loads(path.read_text())
        theirs = json.loads((copy / path.relative_to(study)).read_text().replace(str(copy), str(study)))
        mine.pop("seconds", None), theirs.pop("seconds", None)  # wall-clock timings differ
        assert mine == theirs, path


def test_a_study_or_its_analysis_in_use_is_refused(study, capsys):
    """One process drives a study and one analyses it (the two may run side by side)."""
    with exclusive(study, "study"):
        assert run_cli(study_main, [*QUICK_ARGS, "--out", str(study)]) == 2
        assert f"study {study} is in use by another process" in capsys.readouterr().err
        with exclusive(study / "analysis", "analysis directory"):
            assert run_cli(analysis_main, [str(study), "--data-dir", str(DATA_DIR)]) == 2
            assert f"analysis directory {study / 'analysis'} is in use" in capsys.readouterr().err
        assert run_cli(analysis_main, [str(study), "--data-dir", str(DATA_DIR)]) == 0, "beside the training"


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(UserError, match="--jobs"):
        run_study(tmp_path / "s", quick_plan("mnist1d"), jobs=0)
    with pytest.raises(UserError, match="--jobs"):
        analyse_study(tmp_path / "s", jobs=0)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs_headless_and_writes_png_and_pdf(study, name, tmp_path, monkeypatch):
    monkeypatch.setenv("SWAMP_STUDY", str(study))
    _execute(name, FIGURES[name], tmp_path, monkeypatch)


# Appended to a notebook under test: every curve its last figure drew, as JSON on the last output line.
DRAWN = ("import json\nprint(json.dumps([[i, line.get_label(), [float(v) for v in line.get_xdata()], "
         "[float(v) for v in line.get_ydata()]] for i, ax in enumerate(fig.axes) for line in ax.lines]))")


def _report_cells(report: str, title: str) -> dict[tuple[str, str], str]:
    """The Markdown table under ``### title`` of a report: (row, column) -> the mean of its "mean ± std" cell."""
    block = report.split(f"### {title}\n", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    head = [c.strip() for c in block[0].strip("|").split("|")]
    cells = {}
    for line in block[2:]:
        row = [c.strip() for c in line.strip("|").split("|")]
        cells.update({(row[0], col): value.split(" ± ")[0] for col, value in zip(head[1:], row[1:], strict=True)})
    return cells


@pytest.mark.parametrize("name, title, label, digits", [
    ("01_accuracy_vs_sparsity", "Test accuracy (%) of the cycle's solution", "{label} ({seeds} seeds)", 2),
    ("02_linear_connectivity", "Test loss barrier between particle pairs of a cycle", "{label}", 3),
])
def test_notebook_curves_are_the_report_tables(study, name, title, label, digits, tmp_path, monkeypatch):
    """What a notebook draws is what ``studies.report`` prints: every point of its first panel's curves
    equals the report's table cell of that method and sparsity (to the report's digits)."""
    monkeypatch.setenv("SWAMP_STUDY", str(study))
    executed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    executed.cells.append(nbformat.v4.new_code_cell(DRAWN))
    monkeypatch.setenv("SWAMP_FIGURES", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(executed, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
                   ).execute()
    drawn = json.loads(executed.cells[-1].outputs[-1]["text"].strip().splitlines()[-1])
    cells = _report_cells(study_report(study), title)
    seeds = st.accuracy_frame(study).groupby("label")["seed"].nunique()
    checked = 0
    for axis, curve, xs, ys in drawn:
        column = label.format(label=curve, seeds=seeds.get(curve, 0))
        if axis != 0 or not any(col == column for _, col in cells):
            continue  # bands, the zero line and the ensemble curve have no column of that table
        for x, y in zip(xs, ys, strict=True):
            assert f"{y:.{digits}f}" == cells[(f"{x:.1f}%", column)], (curve, x)
            checked += 1
    assert checked >= 4, drawn


def _execute(name: str, figures: list[str], folder: Path | None, monkeypatch: pytest.MonkeyPatch,
             notebooks: Path = NOTEBOOKS) -> nbformat.NotebookNode:
    """Run ``notebooks/name.ipynb`` headless there; its figures must appear in ``folder`` (None: the
    notebooks' default, ``../runs/figures``). Returns the executed notebook."""
    if folder is None:
        monkeypatch.delenv("SWAMP_FIGURES", raising=False)
        folder = notebooks.parent / "runs" / "figures"
    else:
        monkeypatch.setenv("SWAMP_FIGURES", str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(notebooks / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(notebooks)}}).execute()
    for figure in figures:
        for ext in ("png", "pdf"):
            assert (folder / f"{figure}.{ext}").stat().st_size > 1000
    return nb


def test_notebook_makes_and_draws_the_quick_study_in_a_fresh_directory(tmp_path, monkeypatch):
    """A newcomer's first notebook: no study and no SWAMP_STUDY. The first cell makes the quick study
    beside the notebooks, the figures say so and go to ../runs/figures, not to the committed figures/."""
    notebooks = tmp_path / "analysis_notebooks"
    notebooks.mkdir()
    shutil.copy(NOTEBOOKS / "01_accuracy_vs_sparsity.ipynb", notebooks)
    monkeypatch.delenv("SWAMP_STUDY", raising=False)
    monkeypatch.setenv("SWAMP_DATA_DIR", str(DATA_DIR))
    nb = _execute("01_accuracy_vs_sparsity", ["accuracy_vs_sparsity"], None, monkeypatch, notebooks)
    assert json.loads((tmp_path / "runs" / "study-quick" / MANIFEST).read_text())["quick"]
    assert (tmp_path / "runs" / "study-quick" / "analysis" / "settings.json").is_file()
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "making the quick study" in printed and "(quick study, not results)" in printed


@pytest.fixture(scope="module")
def budget_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick study's IMP and SWAMP (N = 3) arms at 3 epochs per cycle (the quick study trains 1)."""
    root = tmp_path_factory.mktemp("budget") / "e3"
    assert study_main([*QUICK_ARGS, "--out", str(root), "--epochs", "3", "--methods", "imp,swamp-n3"]) == 0
    return root


def test_budget_pairs_swamp_with_imp_per_seed_at_equal_epochs_and_at_equal_cost(study, budget_study, capsys):
    acc = {1: st.accuracy_frame(study), 3: st.accuracy_frame(budget_study)}
    acc = {e: frame.set_index(["method", "seed", "cycle"]) for e, frame in acc.items()}
    same, equal = sb.budget_frame([budget_study, study]), sb.equal_cost_frame([budget_study, study])
    assert list(same["a_epochs"]) == [1, 1, 3, 3] and list(same["cycle"]) == [0, 1, 0, 1]
    assert list(equal["a_epochs"]) == [1, 1] and list(equal["b_epochs"]) == [3, 3], "SWAMP N=3 x 1 = IMP x 3"
    for frame, swamp_epochs, imp_epochs in ((same, 1, 1), (same, 3, 3), (equal, 1, 3)):
        for cycle in (0, 1):
            swamp = [acc[swamp_epochs].at[("swamp-n3", s, cycle), "average_test_acc"] for s in (0, 1)]
            imp = [acc[imp_epochs].at[("imp", s, cycle), "average_test_acc"] for s in (0, 1)]
            row = frame[(frame["a_epochs"] == swamp_epochs) & (frame["b_epochs"] == imp_epochs)
                        & (frame["cycle"] == cycle)].iloc[0]
            assert row["mean"] == pytest.approx((swamp[0] - imp[0] + swamp[1] - imp[1]) / 2) and row["seeds"] == 2
            assert row["positive"] == sum(a > b for a, b in zip(swamp, imp, strict=True))
            assert row["b_acc"] == pytest.approx(sum(imp) / 2) and row["a_acc"] == pytest.approx(sum(swamp) / 2)
    assert (equal["a_cost"] == equal["b_cost"]).all() and (same["a_cost"] > same["b_cost"]).all()
    assert sb.main([str(study), str(budget_study), "--cycles", "1"]) == 0
    tables = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(tables) == 2 + 2 + 1  # two headers; at cycle 1, the 2 budgets and the 1 equal-cost pair
    assert all(line.endswith("| **too few seeds** |") for line in tables if line[2].isdigit()), "2 seeds: no verdict"
    with pytest.raises(UserError, match="two studies train 1 epochs per cycle"):
        sb.budget_frame([study, study])


def test_budget_notebook_runs_headless(study, budget_study, tmp_path, monkeypatch):
    monkeypatch.setenv("SWAMP_BUDGET_STUDIES", f"{study},{budget_study}")
    _execute("06_training_budget", ["training_budget"], tmp_path, monkeypatch)


def test_cost_counts_the_cycles_each_sparsity_needs(study):
    """Iterative pruning needs every cycle so far; one-shot pruning the dense cycle and its own."""
    acc = st.accuracy_frame(study).set_index(["method", "seed", "cycle"])
    config = json.loads((study / "runs" / "imp-s0" / "config.json").read_text())
    epochs, ticket = config["epochs"], config["rewind_epochs"]
    for cycle in (0, 1):
        imp, oneshot = acc.loc[("imp", 0, cycle)], acc.loc[("oneshot-magnitude", 0, cycle)]
        assert imp["particle_epochs"] == ticket + epochs * (cycle + 1)
        assert oneshot["particle_epochs"] == ticket + epochs * (1 + (cycle > 0))
        assert imp["cumulative_seconds"] == pytest.approx(sum(acc.loc[("imp", 0, k), "seconds"]
                                                              for k in range(cycle + 1)))
    dense, pruned = (acc.loc[("oneshot-magnitude", 0, k), "seconds"] for k in (0, 1))
    assert acc.loc[("oneshot-magnitude", 0, 1), "cumulative_seconds"] == pytest.approx(dense + pruned)
    seconds = pd.Series([5.0, 2.0, 3.0])  # three cycles: the third one-shot sparsity does not need the second
    assert st.seconds_to_reach({"pruning_schedule": "one-shot"}, seconds) == [5.0, 7.0, 8.0]
    assert st.seconds_to_reach({}, seconds) == [5.0, 7.0, 10.0]
    swamp = json.loads((study / "runs" / "swamp-plus-s0" / "config.json").read_text())
    expected = ticket + epochs * sum(swamp["particles"] if j >= swamp["particles_from_cycle"] else 1 for j in (0, 1))
    assert acc.loc[("swamp-plus", 0, 1), "particle_epochs"] == expected


def test_report_prints_every_table_as_markdown(study):
    report = study_report(study)
    for title in ("Test accuracy", "Cost", "barrier between particle pairs", "convex hull", "Hessian trace"):
        assert title in report
    assert "| pruned |" in report and "IMP (2 seeds)" in report
    for title in ("Paired differences", "A = SWAMP (N=3), B = IMP", "(cycle, seed) with A < B", "Largest barriers"):
        assert title in report


def test_paired_records_wins_ties_losses_and_a_constant_difference_is_significant():
    frame = pd.DataFrame({"method": ["a"] * 4 + ["b"] * 4 + ["a"] * 3 + ["b"] * 3,
                          "seed": [0, 1, 2, 3] * 2 + [0, 1, 2] * 2,
                          "cycle": [0] * 8 + [1] * 6, "sparsity": [0.0] * 8 + [0.2] * 6,
                          "v": [2.0, 1.0, 1.0, 0.0, 1.0, 1.0, 2.0, 1.0, 3.0, 4.0, 5.0, 2.0, 3.0, 4.0]})
    mixed, constant = paired(frame, "v", "a", "b")
    assert (mixed.positive, mixed.ties, mixed.negative, mixed.record()) == (1, 1, 2, "1/1/2")
    assert constant.mean == 1.0 and constant.record() == "3/0/0" and constant.p_value == 0.0
    assert "| 3/0/0 | 0.000 |" in paired_table([constant], "t")
    same = paired(frame.assign(v=1.0), "v", "a", "b")[1]
    assert same.p_value == 1.0 and same.record() == "0/3/0"


def test_claims_tables_judge_each_cycle_by_the_one_rule_with_holm_over_the_cycles_shown():
    rng = np.random.default_rng(0)
    b = rng.normal(0.9, 0.01, size=(2, 8))
    a = b + np.array([[0.01], [0.0]]) + rng.normal(0, 0.0005, size=(2, 8))  # +1 point at cycle 0, none at 1
    frame = pd.DataFrame([{"method": m, "seed": s, "cycle": c, "sparsity": 0.5 * c, "v": float(x[c, s])}
                          for m, x in (("a", a), ("b", b)) for c in (0, 1) for s in range(8)])
    rows = paired(frame, "v", "a", "b")
    assert [len(r.differences) for r in rows] == [8, 8]
    claim = Claim("greater", 0.5)
    expected = paired_verdicts({str(r.cycle): [100 * d for d in r.differences] for r in rows}, claim)
    assert [v.outcome for v in expected] == ["holds", "does not hold"]
    lines = paired_table(rows, "t", claim=claim).splitlines()
    assert [line.rsplit("|", 2)[1].strip() for line in lines[-2:]] == ["**holds**", "**does not hold**"]
    assert f"{expected[0].p_holm:.2g}" in lines[-2] and "8/0/0" in lines[-2]
    alone = paired_table(rows, "t", cycles=[1], claim=claim).splitlines()[-1]  # Holm over one cycle now
    assert f"{paired_verdicts({'1': [100 * d for d in rows[1].differences]}, claim)[0].p_holm:.2g}" in alone
    few = paired(frame[frame["seed"] < 3], "v", "a", "b")
    assert paired_table(few, "t", claim=claim).splitlines()[-1].endswith("| – | – | **too few seeds** |")


def test_relative_frame_gives_differences_in_percent_of_the_control():
    frame = pd.DataFrame({"method": ["a", "b", "a", "b", "a"], "seed": [0, 0, 1, 1, 2], "cycle": [0] * 5,
                          "sparsity": [0.0] * 5, "trace": [80.0, 100.0, 30.0, 20.0, 5.0]})
    (row,) = paired(relative_frame(frame, "trace", "b"), "trace", "a", "b")
    assert row.differences == pytest.approx((-20.0, 50.0)) and row.seeds == 2  # seed 2 has no control: dropped


def test_paired_differences_are_per_seed_and_per_cycle():
    # A - B on seeds 0, 1, 2 at cycle 0: 1, 2, 3 (two rows of A on seed 2 are averaged first); cycle 1 only seed 0
    frame = pd.DataFrame({
        "method": ["a", "a", "a", "a", "b", "b", "b", "a", "b", "b"],
        "seed": [0, 1, 2, 2, 0, 1, 2, 0, 0, 3],
        "cycle": [0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        "sparsity": [0.0] * 7 + [0.2] * 3,
        "v": [11.0, 12.0, 12.0, 14.0, 10.0, 10.0, 10.0, 5.0, 7.0, 1.0],
    })
    first, second = paired(frame, "v", "a", "b")
    assert (first.cycle, first.mean, first.std, first.seeds, first.positive) == (0, 2.0, 1.0, 3, 3)
    assert first.p_value == pytest.approx(stats.ttest_rel([11, 12, 13], [10, 10, 10]).pvalue)
    assert (second.cycle, second.mean, second.seeds, second.positive) == (1, -2.0, 1, 0)
    assert second.sparsity == pytest.approx(0.2)
    assert math.isnan(second.std) and math.isnan(second.p_value)  # one seed: no spread, no test
    assert count_below(frame, "v", "b", "a") == (3, 4)
    worst = {e.method: e for e in extremes(frame, "v")}
    assert (worst["a"].count, worst["a"].maximum, worst["b"].maximum) == (5, 14.0, 10.0)
