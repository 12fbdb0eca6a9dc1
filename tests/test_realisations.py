"""Realisations of one study on different floating-point paths (studies.realisations).

One real quick study of the MLP is trained in-process (IMP and SWAMP N = 3, seeds 0-2, two cycles of one epoch);
the other realisations are copies of it whose SWAMP ``results.csv`` files are perturbed, as another CPU type or thread
count would perturb them: every accuracy shifted, one seed's difference flipped in sign, one seed's last cycle
not finished yet. Expected numbers are computed here from the CSV files themselves, not through the study layer.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from conftest import DATA_DIR, one_line
from scipy import stats

import studies.realisations as sr
from core.errors import LibraryArgumentError, run_cli
from studies.grid.cli import main as study_main
from studies.verdict import Claim, paired_verdicts

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("realisations") / "intel"
    seeds = ",".join(map(str, SEEDS))
    assert study_main(["--quick", "--preset", "mnist1d-mlp", "--methods", "imp,swamp-n3", "--seeds", seeds, "--out",
                       str(root), "--data-dir", str(DATA_DIR), "--no-progress"]) == 0
    return root


def _read(root: Path, method: str, seed: int) -> list[dict[str, str]]:
    with open(root / "runs" / f"{method}-s{seed}" / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _write(root: Path, method: str, seed: int, rows: list[dict[str, str]]) -> None:
    with open(root / "runs" / f"{method}-s{seed}" / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(_read(root, "imp", 0)[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _acc(root: Path, method: str, seed: int) -> dict[int, float]:
    return {int(r["cycle"]): float(r["average_test_acc"]) for r in _read(root, method, seed)}


def _copy(study: Path, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    shutil.copytree(study, out)
    return out


def _edit_manifest(root: Path, change) -> Path:
    manifest = json.loads((root / "study.json").read_text())
    change(manifest)
    (root / "study.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def realisations(study: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """intel (as trained), amd (SWAMP + 0.01 everywhere, seed 1's cycle-1 difference of the other sign) and
    gpu (SWAMP - 0.004 everywhere, seed 2's cycle 1 not finished)."""
    tmp = tmp_path_factory.mktemp("paths")
    amd, gpu = _copy(study, tmp, "amd"), _copy(study, tmp, "gpu")
    imp_s1 = _acc(study, "imp", 1)[1]
    d_s1 = _acc(study, "swamp-n3", 1)[1] - imp_s1
    for root, shift in ((amd, 0.01), (gpu, -0.004)):
        for seed in SEEDS:
            rows = _read(study, "swamp-n3", seed)
            for r in rows:
                r["average_test_acc"] = repr(float(r["average_test_acc"]) + shift)
                if root == amd and seed == 1 and r["cycle"] == "1":
                    r["average_test_acc"] = repr(imp_s1 + (-0.005 if d_s1 > 0 else 0.005))
            _write(root, "swamp-n3", seed, rows[:1] if root == gpu and seed == 2 else rows)
    return [study, amd, gpu]


def _expected(roots: list[Path], cycle: int, candidates: tuple[int, ...] = SEEDS) -> dict:
    """The report's numbers at ``cycle`` over the ``candidates`` seeds every root finished, from the CSV files."""
    seeds = [s for s in candidates
             if all(cycle in _acc(r, "swamp-n3", s) and cycle in _acc(r, "imp", s) for r in roots)]
    d = [[_acc(r, "swamp-n3", s)[cycle] - _acc(r, "imp", s)[cycle] for s in seeds] for r in roots]
    means = [statistics.fmean(x) for x in d]
    per_seed = list(zip(*d, strict=True))
    return {"seeds": tuple(seeds), "d": d, "means": means, "stds": [statistics.stdev(x) for x in d],
            "wins": [sum(v > 0 for v in x) for x in d], "losses": [sum(v < 0 for v in x) for x in d],
            "p": [stats.ttest_rel([_acc(r, "swamp-n3", s)[cycle] for s in seeds],
                                  [_acc(r, "imp", s)[cycle] for s in seeds]).pvalue for r in roots],
            "spread": max(means) - min(means), "means_std": statistics.stdev(means),
            "same_sign": sum(len({math.copysign(1, v) if v else 0 for v in x}) == 1 for x in per_seed),
            "seed_range": statistics.fmean(max(x) - min(x) for x in per_seed)}


def _judged(roots: list[Path], cycles: tuple[int, ...], seeds: tuple[int, ...] = SEEDS) -> dict:
    """cycle -> the one rule's verdict on the per-seed differences (points) averaged over ``roots``."""
    family = {str(c): [100 * statistics.fmean(x) for x in zip(*_expected(roots, c, seeds)["d"], strict=True)]
              for c in cycles}
    return dict(zip(cycles, paired_verdicts(family, Claim("greater", 0.5)), strict=True))


def test_every_realisations_paired_difference_over_the_common_seeds_and_their_spread(realisations):
    report = sr.realisation_effects(realisations)
    assert report.labels == ("intel", "amd", "gpu") and (report.a, report.b) == ("SWAMP (N=3)", "IMP")
    assert [c.cycle for c in report.cycles] == [0, 1]
    for cycle, seeds in ((0, (0, 1, 2)), (1, (0, 1))):  # gpu has not finished seed 2's cycle 1
        row, want = report.at(cycle), _expected(realisations, cycle)
        assert row.seeds == want["seeds"] == seeds
        for k, e in enumerate(row.effects):
            assert e.differences == pytest.approx(want["d"][k])
            assert (e.mean, e.std, e.p_value) == pytest.approx((want["means"][k], want["stds"][k], want["p"][k]))
            assert (e.positive, e.negative, e.seeds) == (want["wins"][k], want["losses"][k], len(seeds))
        assert (row.pooled, row.spread, row.means_std, row.seed_range) == pytest.approx(
            (statistics.fmean(want["means"]), want["spread"], want["means_std"], want["seed_range"]))
        assert row.same_sign == want["same_sign"]
        judged = _judged(realisations, (0, 1))[cycle]
        assert (row.verdict.outcome, row.verdict.n) == (judged.outcome, judged.n) == (sr.TOO_FEW, len(seeds))
        assert row.verdict.mean == pytest.approx(judged.mean), "the rule sees the per-seed mean over paths"
    assert report.at(1).same_sign <= 1, "amd's seed 1 has the other sign at cycle 1"
    assert report.at(0).spread == pytest.approx(0.014), "the shifts +0.01 and -0.004 move each mean by as much"


def test_the_table_prints_each_realisations_mean_std_record_the_spread_and_the_verdict(realisations):
    report = sr.realisation_effects(realisations, labels=["intel-t1", "amd-t1", "gpu"], cycles=[1])
    table = sr.realisation_table(report)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| pruned | intel-t1 | amd-t1 | gpu | pooled mean | spread (max − min) |")
    assert len(rows) == 2
    want, c = _expected(realisations, 1), report.at(1)
    cells = [cell.strip() for cell in rows[1].strip("|").split("|")]
    assert cells[0] == f"{100 * c.sparsity:.1f}%"
    for k in range(3):
        assert cells[1 + k] == (f"{100 * want['means'][k]:+.2f} ± {100 * want['stds'][k]:.2f} "
                                f"({want['wins'][k]}/{2 - want['wins'][k] - want['losses'][k]}/{want['losses'][k]})")
    assert cells[4:8] == [f"{100 * statistics.fmean(want['means']):+.2f}", f"{100 * want['spread']:.2f}",
                          f"{100 * want['means_std']:.2f}", f"{want['same_sign']} of 2"]
    assert cells[-1] == c.verdict.summary() == f"**{sr.TOO_FEW}** (2 seeds, fewer than 6)"


def _eight_seed_realisations(study: Path, tmp: Path, gains: tuple[float, float]) -> list[Path]:
    """Two realisations of a study of 8 seeds made from the 3 trained ones (the runs of seed s copied to seeds
    3..7), each with SWAMP's accuracy set to IMP's + its ``gains`` (points) + a small seed-dependent wobble."""
    roots = []
    for name, gain in zip(("p1", "p2"), gains, strict=True):
        root = _copy(study, tmp, name)
        for seed in range(3, 8):
            for method in ("imp", "swamp-n3"):
                shutil.copytree(root / "runs" / f"{method}-s{seed % 3}", root / "runs" / f"{method}-s{seed}")
        _edit_manifest(root, lambda m: m.update(seeds=list(range(8)), runs=m["runs"] + [
            {**r, "seed": seed, "name": f"{r['method']}-s{seed}", "path": f"runs/{r['method']}-s{seed}"}
            for seed in range(3, 8) for r in m["runs"] if r["seed"] == seed % 3]))
        for seed in range(8):
            imp = _acc(root, "imp", seed)
            rows = _read(root, "swamp-n3", seed)
            for r in rows:
                r["average_test_acc"] = repr(imp[int(r["cycle"])] + (gain + 0.1 * (seed % 3)) / 100)
            _write(root, "swamp-n3", seed, rows)
        roots.append(root)
    return roots


def test_the_verdict_is_the_one_rule_on_the_per_seed_differences_averaged_over_the_paths(study, tmp_path, capsys):
    roots = _eight_seed_realisations(study, tmp_path, (1.4, 0.6))  # a 1-point gain on average over the paths
    report = sr.realisation_effects(roots)
    assert [c.verdict.n for c in report.cycles] == [8, 8]
    judged = _judged(roots, (0, 1), tuple(range(8)))
    for c in report.cycles:
        assert c.verdict.outcome == judged[c.cycle].outcome == sr.HOLDS
        assert c.verdict.mean == pytest.approx(1.0 + 0.1 * statistics.fmean(s % 3 for s in range(8)))
        assert c.verdict.p_holm == pytest.approx(judged[c.cycle].p_holm)
    near = sr.realisation_effects(roots, claim=Claim("equivalent", 0.5))
    assert {c.verdict.outcome for c in near.cycles} == {sr.DOES_NOT_HOLD}, "1.09 points is not within 0.5"
    assert run_cli(sr.main, [*map(str, roots), "--claim", "equivalent", "--effect", "0.5"]) == 0
    assert capsys.readouterr().out == sr.realisation_table(near) + "\n"
    assert run_cli(sr.main, [*map(str, roots), "--effect", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --effect must be a finite number > 0, not -1"


def test_a_published_effect_has_the_paired_t_test_of_its_numbers():
    d = [0.012, 0.03, -0.004, 0.021, 0.018, 0.009]
    effect = sr.published_effect(statistics.fmean(d), statistics.stdev(d), 5, 0, 1)
    assert effect.p_value == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
    assert (effect.seeds, effect.record(), effect.differences) == (6, "5/0/1", None)
    assert sr.published_effect(0.01, 0.0, 3, 0, 0).p_value == 0.0
    assert sr.published_effect(0.0, 0.0, 0, 3, 0).p_value == 1.0
    for bad in ((0.01, 0.01, 1, 0, 0), (0.01, -0.01, 2, 0, 0), (math.inf, 0.01, 2, 0, 0), (0.01, 0.01, -1, 3, 0)):
        with pytest.raises(LibraryArgumentError):
            sr.published_effect(*bad)


def test_published_numbers_join_the_on_disk_realisations_at_the_cycles_they_give(realisations, capsys):
    report = sr.realisation_effects(realisations[:2])
    intel = sr.published_effect(-0.0035, 0.0016, 0, 0, 6)
    joined = sr.realisation_effects(realisations[:2], published={"docs": {1: intel}})
    assert joined.labels == ("intel", "amd", "docs") and joined.published == ("docs",)
    assert [c.cycle for c in joined.cycles] == [1], "cycle 0 is not published"
    row, before = joined.at(1), report.at(1)
    means = [e.mean for e in before.effects] + [-0.0035]
    assert row.effects[:2] == before.effects and row.effects[2] == intel
    assert row.pooled == pytest.approx(statistics.fmean(means)) and row.spread == pytest.approx(max(means) - min(means))
    assert (row.same_sign, row.seed_range) == (before.same_sign, before.seed_range), "per seed: on-disk only"
    assert row.verdict == before.verdict, "published numbers are shown, not judged"
    assert "docs: published numbers" in sr.realisation_table(joined)
    assert "given by every published realisation" in one_line(sr.realisation_effects, realisations,
                                                               published={"docs": {7: intel}})
    assert "a label of its own" in one_line(sr.realisation_effects, realisations[:2], published={"amd": {1: intel}})
    assert "at least two realisations" in one_line(sr.realisation_effects, realisations[:1])
    assert run_cli(sr.main, [str(realisations[0]), "--published", "docs:1:-0.35:0.16:0/0/6"]) == 0
    printed = capsys.readouterr().out
    cli = sr.realisation_effects(realisations[:1], published={"docs": {1: intel}})
    assert printed == sr.realisation_table(cli) + "\n"
    assert cli.at(1).same_sign is None and math.isnan(cli.at(1).seed_range), "one on-disk realisation"


def test_the_cli_prints_the_library_table(realisations, capsys):
    args = [*map(str, realisations), "--labels", "x,y,z", "--cycles", "0", "--seeds", "0,1"]
    assert run_cli(sr.main, args) == 0
    report = sr.realisation_effects(realisations, labels=["x", "y", "z"], cycles=[0], seeds=[0, 1])
    assert capsys.readouterr().out == sr.realisation_table(report) + "\n"
    assert report.at(0).seeds == (0, 1)


def _settings(m):
    m["settings"]["epochs"] = 3


def _methods(m):
    m["methods"][1]["particles"] = 5


def _preset(m):
    m["preset"] = "mnist1d"  # the study's is mnist1d-mlp


def _seeds(m):
    m["seeds"] = [7]
    for run in m["runs"]:
        run["seed"] = 7


@pytest.mark.parametrize(("change", "message"), [
    (_settings, "its settings differ in study.json"), (_methods, "its methods' settings differ"),
    (_preset, "its preset differ"), (_seeds, "no seed in common")])
def test_realisations_of_different_grids_or_seeds_are_refused(study, tmp_path, change, message):
    other = _edit_manifest(_copy(study, tmp_path, "other"), change)
    assert message in one_line(sr.realisation_effects, [study, other])


def test_no_common_cycle_unknown_cycles_seeds_roles_values_and_labels_are_refused(study, realisations, tmp_path):
    early, late = _copy(study, tmp_path, "early"), _copy(study, tmp_path, "late")
    for seed in SEEDS:
        rows = _read(study, "swamp-n3", seed)
        _write(early, "swamp-n3", seed, rows[:1])
        _write(late, "swamp-n3", seed, rows[1:])
    assert "no cycle is finished by swamp-n3 and imp" in one_line(sr.realisation_effects, [early, late])
    assert "--cycles 1 is not finished" in one_line(sr.realisation_effects, [study, early], cycles=[1])
    assert "--seeds 5 is not a seed of every study" in one_line(sr.realisation_effects, realisations, seeds=[0, 5])
    assert "no method of role 'swa'" in one_line(sr.realisation_effects, realisations, a_role="swa")
    assert "the same method" in one_line(sr.realisation_effects, realisations, a_role="imp")
    assert "--value 'seconds_x'" in one_line(sr.realisation_effects, realisations, value="seconds_x")
    assert "--labels gives 2 labels for 3" in one_line(sr.realisation_effects, realisations, labels=["a", "b"])
    assert "distinct" in one_line(sr.realisation_effects, realisations, labels=["a", "a", "b"])
    assert "given twice" in one_line(sr.realisation_effects, [study, study.parent / ".." / study.parent.name / "intel"])
    assert "study.json does not exist" in one_line(sr.realisation_effects, [study, tmp_path])


@pytest.mark.parametrize(("dirs", "args", "message"), [
    (1, [], "at least two realisations"), (2, ["--labels", "a,b,c"], "--labels gives 3 labels for 2"),
    (1, ["--published", "docs:1:0.3"], "argument --published: LABEL:CYCLE:MEAN:STD:W/T/L"),
    (1, ["--published", "docs:1:0.3:-0.1:2/0/0"], "argument --published"),
    (1, ["--published", "docs:1:0.3:0.1:2/0/0", "--published", "docs:1:0.2:0.1:2/0/0"], "cycle 1 of docs twice"),
    (2, ["--value", "seconds"], "argument --value: invalid choice"), (2, ["--seeds", "0,x"], "--seeds takes integers"),
    (2, ["--cycles", "0,x"], "argument --cycles")])
def test_cli_bad_input_is_one_error_line_and_exit_2(realisations, dirs, args, message, capsys):
    assert run_cli(sr.main, [*map(str, realisations[:dirs]), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
