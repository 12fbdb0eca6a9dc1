"""benchmarks.harness.paired on fake timed functions: order rotation, warm-up exclusion and paired-ratio maths."""

import dataclasses

import pytest

from benchmarks.harness import Measured, paired


class FakeClock:
    """A clock that each fake function advances by its own duration for the round."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sides(clock: FakeClock, durations: dict[str, list[float]], log: list[str]) -> dict:
    """name -> a function that logs its name and advances ``clock`` by its next duration."""
    left = {name: iter(values) for name, values in durations.items()}

    def make(name):
        def fn():
            log.append(name)
            clock.now += next(left[name])
        return fn

    return {name: make(name) for name in durations}


def test_order_rotates_every_round_and_each_side_runs_once_per_round():
    clock, log = FakeClock(), []
    fns = sides(clock, {"a": [1.0] * 4, "b": [1.0] * 4, "c": [1.0] * 4}, log)
    p = paired(fns, rounds=3, warmup=1, wall_clock=clock, cpu_clock=clock)
    assert p.orders == (("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b"), ("a", "b", "c"))
    assert log == [n for order in p.orders for n in order]
    first = [order[0] for order in p.orders[:3]]
    assert sorted(first) == ["a", "b", "c"]  # every side leads once in n rounds


def test_warmup_rounds_are_excluded_on_every_side():
    clock, log = FakeClock(), []
    fns = sides(clock, {"ref": [100.0, 2.0, 2.0, 4.0], "x": [1.0, 1.0, 3.0, 2.0]}, log)
    p = paired(fns, rounds=3, warmup=1, wall_clock=clock, cpu_clock=clock)
    assert p["ref"].wall == (2.0, 2.0, 4.0)
    assert p["x"].wall == (1.0, 3.0, 2.0)
    assert p.rounds == 3 and p.warmup == 1


def test_ratios_are_paired_per_round_not_ratios_of_medians():
    clock, log = FakeClock(), []
    # round by round x / ref = 0.5, 0.5, 2.0: median 0.5, though median(x) / median(ref) = 2 / 2 = 1
    fns = sides(clock, {"ref": [9.0, 2.0, 4.0, 1.0], "x": [9.0, 1.0, 2.0, 2.0]}, log)
    p = paired(fns, rounds=3, warmup=1, wall_clock=clock, cpu_clock=clock)
    assert p["x"].wall_ratio.median == pytest.approx(0.5)
    assert (p["x"].wall_ratio.low, p["x"].wall_ratio.high) == pytest.approx((0.5, 2.0))
    assert p["ref"].wall_ratio.median == 1.0
    assert p["x"].cpu_ratio == p["x"].wall_ratio  # the fake CPU clock is the same clock


def test_cpu_clock_is_recorded_separately_from_wall():
    wall, cpu, log = FakeClock(), FakeClock(), []
    fns = sides(wall, {"ref": [1.0] * 3, "x": [3.0] * 3}, log)

    def spending(fn, seconds):
        def wrapped():
            fn()
            cpu.now += seconds
        return wrapped

    fns = {"ref": spending(fns["ref"], 1.0), "x": spending(fns["x"], 1.5)}
    p = paired(fns, rounds=2, warmup=1, wall_clock=wall, cpu_clock=cpu)
    assert p["x"].wall_ratio.median == pytest.approx(3.0)
    assert p["x"].cpu_ratio.median == pytest.approx(1.5)


def test_reference_side_and_measured_results():
    clock = FakeClock()
    fns = {"a": lambda: Measured(2.0, 1.0), "b": lambda: Measured(1.0, 1.0)}
    p = paired(fns, rounds=2, warmup=1, reference="b", wall_clock=clock, cpu_clock=clock)
    assert p.sides[0].name == "b" and p.reference == "b"
    assert p["a"].wall_ratio.median == 2.0 and p["a"].cpu_ratio.median == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.rounds = 5


@pytest.mark.parametrize("kwargs", [{"rounds": 0}, {"warmup": 0}, {"reference": "nope"}])
def test_bad_arguments_are_errors(kwargs):
    with pytest.raises(ValueError):
        paired({"a": lambda: None}, **kwargs)


@pytest.mark.parametrize("epochs", [1, 2])
def test_bench_step_plain_loop_trains_exactly_what_swamp_trains(epochs):
    """The like-for-like plain PyTorch loop (masks, cosine schedule, SWA, BN recomputation) and SWAMP's
    train_particle end on the same weights, so bench_step times the same work on both sides."""
    import torch

    from benchmarks.bench_step import step_loops
    from benchmarks.harness import dataset_for

    data = dataset_for("mlp", torch.device("cpu"), 0)
    loops = step_loops("mlp", data, torch.device("cpu"), epochs, 128)
    plain, ours = loops["plain"]().module.state_dict(), loops["masked SWA"]()
    assert set(ours) <= set(plain)
    for name, value in ours.items():
        assert torch.equal(plain[name], value), name
