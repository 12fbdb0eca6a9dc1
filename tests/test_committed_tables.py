"""The pages print exactly the tables that the committed per-seed data give (the budget, particle-count,
trace-matched, one-shot, ingredients, consecutive-cycle and one-factor studies of docs/reproductions.md)."""

from __future__ import annotations

import pytest

from studies.reproductions import budget, consecutive, factors, ingredients, matched, oneshot, particles
from tests.conftest import REPOSITORY

STUDIES = [budget, particles, matched, oneshot, ingredients, consecutive, factors]


@pytest.mark.parametrize("study", STUDIES, ids=[s.__name__.rsplit(".", 1)[1] for s in STUDIES])
def test_reproductions_md_prints_the_committed_datas_tables(study):
    rows = study.read_csv(REPOSITORY / "docs" / "data" / f"{study.__name__.rsplit('.', 1)[1]}-mnist1d.csv")
    assert {int(r["seed"]) for r in rows} == set(range(12)), "12 seeds, as the page says"
    doc = (REPOSITORY / "docs" / "reproductions.md").read_text()
    for line in study.tables(rows).splitlines():
        assert line in doc, line
