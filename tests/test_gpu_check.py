"""benchmarks.gpu_check, the one-command GPU device check, in its reduced mode on the CPU (so that it cannot rot)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR

from benchmarks import gpu_check, gpu_sections
from core.errors import run_cli


def _positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def _ratio_ok(r: dict) -> bool:
    return all(_positive(r[k]) for k in ("median", "min", "max")) and r["min"] <= r["median"] <= r["max"]


@pytest.fixture(scope="module")
def reduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpu") / "check"
    argv = ["--device", "cpu", "--budget", "900", "--out", str(out), "--reduced", "--data-dir", str(DATA_DIR)]
    assert run_cli(gpu_check.main, argv) == 0
    return out


def test_reduced_check_writes_every_section(reduced: Path) -> None:
    report = json.loads((reduced / "gpu_check.json").read_text())
    assert report["gpu_check"] == 1 and report["finished"] and report["mode"] == "reduced"
    assert {"gpu", "driver", "torch", "cuda", "cudnn", "date", "cpus"} <= set(report["machine"])
    sections = report["sections"]
    assert list(sections) == ["engines", "swa_step", "hessian", "scans"]  # the most important first
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(sections, "ok")
    assert sorted(p.name for p in reduced.iterdir()) == ["gpu_check.json", "gpu_check.md"]  # scratch removed

    rows = sections["engines"]["rows"]
    seen = {(r["model"], r["variant"], r["particles"], r["engine"]) for r in rows}
    variants = {"cnn1d": ["fp32"], "resnet20": ["fp32", "amp", "channels_last"]}
    assert seen == {(m, v, n, e) for m in variants for v in variants[m] for n in (1, 2)
                    for e in ("sequential", "vectorized") if e == "sequential" or v == "fp32"}, \
        "--amp and --channels-last rows train sequentially (they do not stack)"
    for r in rows:
        assert _positive(r["seconds_per_epoch"]) and _positive(r["plain_seconds_per_epoch"])
        assert _ratio_ok(r["ratio_vs_plain"]) and _ratio_ok(r["ratio_vs_n_plain"])
        assert (r["ratio_vs_fp32"] is None) == (r["variant"] == "fp32")
        assert r["variant"] == "fp32" or _ratio_ok(r["ratio_vs_fp32"])
        assert _ratio_ok(r["ratio_vs_one"]) and (r["particles"] > 1 or r["ratio_vs_one"]["median"] == 1.0)
        assert r["peak_gpu_mib"] is None  # no GPU: no GPU memory figure, rather than a zero
        assert r["auto_picks"] == ("sequential" if r["particles"] == 1 or r["variant"] != "fp32" else r["auto_picks"])
        assert r["fastest"] in ("sequential", "vectorized")
        pair = [q for q in rows if q["variant"] == r["variant"] and q["particles"] == r["particles"]
                and q["model"] == r["model"]]
        assert r["fastest"] == min(pair, key=lambda q: q["seconds_per_epoch"])["engine"]

    swa = sections["swa_step"]
    assert all(_positive(t) for t in swa["seconds_per_epoch"].values())
    assert _ratio_ok(swa["masked_swa_vs_plain"])
    hessian = sections["hessian"]
    assert [r["target_rse"] for r in hessian["rows"]] == [0.05, 0.02]
    for r in hessian["rows"]:
        assert _positive(r["pyhessian_seconds"]) and _positive(r["ours_seconds"]) and _ratio_ok(r["ratio"])
        assert all(_positive(e) for e in r["estimates"]) and r["gap_in_stderrs"] < 5  # both estimate one trace
    scans = sections["scans"]
    assert scans["points"] == 41 and all(_positive(t) for t in scans["seconds_per_scan"].values())
    assert set(scans["seconds_per_scan"]) == {"ours", "ours, modules", "loss-landscapes", "stacked"}
    assert _ratio_ok(scans["ours_vs_loss_landscapes"]) and _ratio_ok(scans["stacked_vs_ours"])
    assert _ratio_ok(scans["modules_vs_loss_landscapes"])

    # the targets the reduced run can show (no N = 4 there): each one measured ratio against its limit
    assert [t["target"].split(" (")[0] for t in report["targets"]] == [
        "masked SWA step / plain loop", "Hessian trace to 2% RSE / PyHessian", "41-point barrier / loss-landscapes",
        "41-point barrier on loaded modules / loss-landscapes"]
    assert all(t["met"] == (t["measured"] <= t["limit"]) for t in report["targets"])
    md = (reduced / "gpu_check.md").read_text()
    assert md.startswith(gpu_check.MD_TITLE) and "**error**" not in md and "skipped" not in md
    for header in ("| target | at most | measured | met |", "| model | variant | N | engine |",
                   "| model | samples | epochs | plain masked SWA s/epoch |", "| target RSE | PyHessian s |",
                   "| K | ours s | ours on modules s | loss-landscapes s |"):
        assert header in md


def test_rerun_replaces_its_own_outputs_but_not_foreign_files(reduced: Path, tmp_path: Path, capsys) -> None:
    gpu_check.check_output_dir(reduced)  # its own earlier outputs may be replaced
    for name, text in (("gpu_check.json", '{"mine": 1}'), ("gpu_check.md", "my notes\n")):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        (out / name).write_text(text)
        assert run_cli(gpu_check.main, ["--device", "cpu", "--out", str(out), "--reduced"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "left as it is" in err
        assert (out / name).read_text() == text and len(list(out.iterdir())) == 1
    linked = tmp_path / "linked"
    linked.mkdir()
    (tmp_path / "target.md").write_text("mine\n")
    (linked / "gpu_check.md").symlink_to(tmp_path / "target.md")
    assert run_cli(gpu_check.main, ["--device", "cpu", "--out", str(linked), "--reduced"]) == 2
    assert "not a regular file" in capsys.readouterr().err and (tmp_path / "target.md").read_text() == "mine\n"
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    assert run_cli(gpu_check.main, ["--device", "cpu", "--out", str(not_dir)]) == 2
    assert "not a directory" in capsys.readouterr().err and not_dir.read_text() == "x"


@pytest.mark.parametrize("flags, words", [(["--budget", "0"], "--budget"), (["--budget", "nan"], "--budget"),
                                          (["--device", "tpu"], "--device"), (["--sections", "x"], "--sections")])
def test_bad_flags_are_one_line(flags: list[str], words: str, tmp_path: Path, capsys) -> None:
    assert run_cli(gpu_check.main, ["--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_is_refused(out: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(gpu_check.main, ["--out", out, "--reduced"]) == 2
    assert "--out must name a directory" in capsys.readouterr().err and not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused(tmp_path: Path, capsys) -> None:
    assert run_cli(gpu_check.main, ["--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_failing_section_is_recorded_and_the_next_still_runs(tmp_path: Path, monkeypatch) -> None:
    def broken(setup, budget):
        raise RuntimeError("the engine broke")

    def quick(setup, budget):
        return {"points": 41, "rounds": 1, "seconds_per_scan": {"ours": 1.0, "loss-landscapes": 2.0, "stacked": 0.5},
                "ours_vs_loss_landscapes": {"median": 0.5, "min": 0.5, "max": 0.5},
                "stacked_vs_ours": {"median": 0.5, "min": 0.5, "max": 0.5}, "target": 1.0, "stacked_is": "a test"}

    monkeypatch.setitem(gpu_sections.SECTIONS, "engines", (broken, 0.5))
    monkeypatch.setitem(gpu_sections.SECTIONS, "scans", (quick, 0.5))
    written: list[dict] = []
    setup = gpu_sections.Setup(torch.device("cpu"), True, str(DATA_DIR), tmp_path)
    report = gpu_check.run_check(setup, 60.0, lambda r: written.append(json.loads(json.dumps(r))),
                                 sections=("engines", "scans"))
    engines = report["sections"]["engines"]
    assert engines["status"] == "error" and engines["error"].startswith("RuntimeError: the engine broke (at ")
    assert "the engine broke" in engines["traceback"]
    assert report["sections"]["scans"]["status"] == "ok" and report["finished"]
    # rewritten after every section: a run killed during the second leaves the first
    assert [list(r["sections"]) for r in written] == [[], ["engines"], ["engines", "scans"], ["engines", "scans"]]
    md = gpu_check.markdown(report, gpu_check.MD_TITLE, "machine")
    assert "**error**: RuntimeError: the engine broke" in md and "| 41 |" in md and "Traceback" not in md


def test_warm_up_records_errors_and_skips_what_the_budget_cannot_hold() -> None:
    cpu = torch.device("cpu")

    def broken():
        raise ValueError("no such kernel")

    calls: list[str] = []
    fns = [lambda: calls.append("a"), broken, lambda: calls.append("c")]
    result = gpu_sections._warm_up(fns, gpu_sections.Budget(time.perf_counter() + 60), cpu)
    assert calls == ["a", "c"] and isinstance(result[0], float) and isinstance(result[2], float)
    assert result[1].startswith("error: ValueError: no such kernel (at test_gpu_check.py:")
    spent = gpu_sections._warm_up(fns, gpu_sections.Budget(time.perf_counter() - 1), cpu)
    assert spent == ["skipped: budget"] * 3 and calls == ["a", "c"]  # nothing runs past the deadline
    with pytest.raises(gpu_sections.OutOfBudget):
        gpu_sections._all_warmed_up(fns[:1], gpu_sections.Budget(time.perf_counter() - 1), cpu)
    with pytest.raises(RuntimeError, match="no such kernel"):
        gpu_sections._all_warmed_up(fns, gpu_sections.Budget(time.perf_counter() + 60), cpu)


def test_paired_rounds_alternate_the_order_and_stop_at_the_deadline() -> None:
    from benchmarks.harness import paired_rounds

    order: list[str] = []
    fns = [lambda: order.append("a"), lambda: order.append("b")]
    rounds = paired_rounds(fns, 3, torch.device("cpu"))
    assert order == ["a", "b", "b", "a", "a", "b"] and len(rounds) == 3 and all(len(r) == 2 for r in rounds)
    order.clear()
    assert len(paired_rounds(fns, 3, torch.device("cpu"), until=time.perf_counter() - 1)) == 1  # the first always
