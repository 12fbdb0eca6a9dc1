"""``python -m training.transplant``: a run trained on another run's masks (mask or weights)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR, one_line

from core.artifacts.checkpoint import load_checkpoint
from core.errors import run_cli
from training import imp, swamp, transplant

ARGS = ["--model", "mlp", "--cycles", "3", "--epochs", "1", "--rewind-epochs", "1", "--prune-ratio", "0.5",
        "--no-progress", "--data-dir", str(DATA_DIR), "--seed", "5"]
IMP = ["--particles", "1", "--no-swa"]


@pytest.fixture(scope="module")
def donors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An IMP run and a 2-particle SWAMP run of the same seed (the same ticket)."""
    root = tmp_path_factory.mktemp("donors")
    assert imp.main([*ARGS, "--out", str(root / "imp")]) == 0
    assert swamp.main([*ARGS, "--particles", "2", "--out", str(root / "swamp")]) == 0
    return root


def _ckpt(run: Path, cycle: int):
    return load_checkpoint(run / f"cycle_{cycle:02d}" / "average.safetensors")


def _digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file()}


def test_a_run_on_its_own_masks_is_the_run(donors, tmp_path):
    # IMP's rule and the transplant of IMP's own masks give the same masks, so the same weights to the bit
    out = tmp_path / "imp-on-imp"
    assert transplant.main([*ARGS, *IMP, "--masks-from", str(donors / "imp"), "--out", str(out)]) == 0
    for cycle in range(3):
        a, b = _ckpt(donors / "imp", cycle), _ckpt(out, cycle)
        assert a.masks.keys() == b.masks.keys() and a.state.keys() == b.state.keys()
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_imp_on_swamps_masks_trains_under_them_from_imps_ticket(donors, tmp_path):
    out = tmp_path / "imp-on-swamp"
    before = _digests(donors / "swamp")
    assert transplant.main([*ARGS, *IMP, "--masks-from", str(donors / "swamp"), "--out", str(out)]) == 0
    assert _digests(donors / "swamp") == before  # the run it reads is untouched
    for cycle in range(3):
        donor, own, ours = _ckpt(donors / "swamp", cycle), _ckpt(donors / "imp", cycle), _ckpt(out, cycle)
        assert all(torch.equal(donor.masks[k], ours.masks[k]) for k in donor.masks)
        assert all(torch.equal(ours.state[k] * (1 - ours.masks[k]), torch.zeros_like(ours.state[k]))
                   for k in ours.masks)  # pruned weights are exactly 0
        if cycle == 0:  # the dense cycle: the same ticket, mask and training as IMP's
            assert all(torch.equal(own.state[k], ours.state[k]) for k in own.state)
    # from cycle 1 on SWAMP's masks differ from IMP's, and IMP on them is another network
    assert any(not torch.equal(_ckpt(donors / "swamp", 2).masks[k], _ckpt(donors / "imp", 2).masks[k])
               for k in _ckpt(donors / "imp", 2).masks)


def test_the_run_records_its_masks_source_and_resumes_only_with_it(donors, tmp_path, capsys):
    out = tmp_path / "t"
    assert transplant.main([*ARGS, *IMP, "--cycles", "2", "--masks-from", str(donors / "swamp"), "--out",
                            str(out)]) == 0
    text = (out / "config.json").read_text()
    assert '"pruning_schedule": "transplanted"' in text and str(donors / "swamp") in text
    # resuming as ordinary IMP (or from other masks) is refused, naming what differs
    assert run_cli(imp.main, ["--out", str(out), "--resume"]) == 2
    assert f"masks_from was '{donors / 'swamp'}', now None" in capsys.readouterr().err
    assert run_cli(transplant.main, ["--out", str(out), "--resume", "--masks-from", str(donors / "imp")]) == 2
    assert f"masks_from was '{donors / 'swamp'}', now '{donors / 'imp'}'" in capsys.readouterr().err
    assert run_cli(transplant.main, ["--out", str(out), "--resume", "--masks-from", str(donors / "swamp")]) == 0


@pytest.mark.parametrize("case", ["missing", "too-few-cycles", "same-as-out", "other-model"])
def test_bad_masks_sources_get_one_line(donors, tmp_path, case):
    out = tmp_path / "out"
    argv = {"missing": [*ARGS, "--out", str(out)],
            "too-few-cycles": [*ARGS, "--cycles", "4", "--masks-from", str(donors / "imp"), "--out", str(out)],
            "same-as-out": [*ARGS, "--cycles", "2", "--masks-from", str(donors / "imp"), "--out",
                            str(donors / "imp"), "--overwrite"],
            "other-model": [*ARGS, "--model", "cnn1d", "--cycles", "2", "--masks-from", str(donors / "imp"),
                            "--out", str(out)]}[case]
    before = _digests(donors / "imp")
    message = one_line(transplant.main, argv)
    assert {"missing": "--masks-from RUN is required", "too-few-cycles": "cycle 3 is not finished there",
            "same-as-out": "never replaces the run it reads",
            "other-model": "trained --model mlp --model-kwargs {}, this run --model cnn1d"}[case] in message
    assert not out.exists()  # refused before anything was written
    assert _digests(donors / "imp") == before


def test_the_rule_refuses_a_first_mask_that_is_not_dense():
    rule = transplant.transplant_rule([{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 0.0])}])
    assert "is not this run's first mask" in one_line(rule, 0, {}, {"w": torch.ones(2)})
    shape = transplant.transplant_rule([{"w": torch.ones(3)}])
    assert "has shape (3,)" in one_line(shape, 0, {}, {"w": torch.ones(2)})
    names = transplant.transplant_rule([{"v": torch.ones(2)}])
    assert "only there: v; only here: w" in one_line(names, 0, {}, {"w": torch.ones(2)})
