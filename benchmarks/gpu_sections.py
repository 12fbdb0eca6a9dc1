"""The sections of :mod:`benchmarks.gpu_check`, each a function ``(setup, budget) -> dict`` of plain JSON values.

Every timing is paired: the compared calls run in the same rounds, in an order reversed every other round,
each after one warm-up call that is not timed (:func:`benchmarks.harness.paired_rounds`), and a ratio is
taken within a round; the sections report the median of the per-round ratios and their min and max.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.harness import cifar_like, paired_rounds, ratio_summary, timed

CIFAR_SAMPLES = 50_000


@dataclass(frozen=True)
class Setup:
    """What every section shares: the device, the mode, where data and scratch files go."""

    device: torch.device
    reduced: bool
    data_dir: str
    scratch: Path
    cifar_model: str = "resnet20"

    @property
    def batch(self) -> int:
        """The training batch size: a run's 128, or 32 in the reduced mode (CPU smoke runs)."""
        return 32 if self.reduced else 128

    def probe_samples(self) -> int:
        """Training samples of the first measurement that sizes a section: 1 batch reduced, else 4."""
        return (1 if self.reduced else 4) * self.batch


def describe(err: BaseException) -> str:
    """One line: the error's type and message and where it was raised (the innermost frame)."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}{where}"


class OutOfBudget(RuntimeError):
    """What is left of the budget cannot hold the next measurement (recorded as ``skipped: budget``)."""


@dataclass(frozen=True)
class Budget:
    """A deadline (``time.perf_counter()`` seconds)."""

    deadline: float

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def need(self, seconds: float, what: str) -> None:
        """Raise :class:`OutOfBudget` unless ``seconds`` are left for ``what``."""
        if self.left() < seconds:
            raise OutOfBudget(f"{what} needs about {seconds:.0f} s, {max(self.left(), 0):.0f} s are left")

    def share(self, fraction: float) -> Budget:
        """The first ``fraction`` of what is left."""
        return Budget(time.perf_counter() + fraction * max(self.left(), 0.0))


def _rounds(budget: Budget, per_round: float, most: int) -> int:
    """How many timed rounds of ``per_round`` seconds fit with one round's time to spare, 1 to ``most``."""
    return max(1, min(most, int(budget.left() / max(per_round, 1e-6)) - 1))


def _samples(setup: Setup, budget: Budget, seconds_per_sample: float, rounds: int) -> int:
    """The most training samples (whole batches, at most 50,000; 1 batch reduced) for which ``rounds`` + 1
    rounds of ``seconds_per_sample`` per sample fit ``budget``."""
    if setup.reduced:
        return setup.batch
    fit = int(budget.left() / max((rounds + 1) * seconds_per_sample, 1e-9))
    return max(setup.batch, min(CIFAR_SAMPLES, fit // setup.batch * setup.batch))


def cifar_data(setup: Setup, samples: int):
    """``samples`` CIFAR-shaped random images on the device, as torchvision's FakeData (3x32x32, 10 classes):
    made by :func:`benchmarks.harness.cifar_like`, since FakeData draws its images one PIL image at a
    time (about 1 ms each on a CPU core, most of the budget for 50,000)."""
    return cifar_like(samples, setup.device)


def _warm_up(fns: list[Callable[[], object]], budget: Budget, device: torch.device) -> list[float | str]:
    """Call each of ``fns`` once (untimed warm-up: lazy initialisation, autotuning) while the budget lasts,
    keeping time for a timed round of those warmed up. Returns, for each, its seconds, or why it is left out
    (``"skipped: budget"``, or ``"error: ..."`` when the call failed: the others still run)."""
    result: list[float | str] = []
    for fn in fns:
        done = [t for t in result if isinstance(t, float)]
        if budget.left() <= 0 or done and budget.left() < 2 * sum(done) * (1 + 1 / len(done)):
            result.append("skipped: budget")
            continue
        try:
            result.append(timed(fn, device))
        except Exception as err:  # e.g. an engine that cannot run a variant; recorded in its row
            result.append(f"error: {describe(err)}")
    return result


def _all_warmed_up(fns: list[Callable[[], object]], budget: Budget, device: torch.device) -> list[float]:
    """:func:`_warm_up` where every call is needed: raises :class:`OutOfBudget` or the first error."""
    warm = _warm_up(fns, budget, device)
    left_out = [t for t in warm if isinstance(t, str)]
    if left_out:
        raise (OutOfBudget if left_out[0].startswith("skipped") else RuntimeError)(left_out[0])
    return warm  # type: ignore[return-value]


def _per_sample_epoch(fn: Callable[[], object], samples: int, device: torch.device) -> float:
    """Seconds per sample of one call of ``fn`` (an epoch over ``samples`` samples) after a warm-up call."""
    fn()
    return timed(fn, device) / samples


# ---------------------------------------------------------------------------------------------------------
# 1. engines


def _context(model: str, data, setup: Setup, out: Path, particles: int, amp: bool, channels_last: bool):
    from training.config import parse_config
    from training.context import build_context

    argv = ["--model", model, "--particles", str(particles), "--epochs", "1", "--cycles", "1", "--batch-size",
            str(setup.batch), "--device", str(setup.device), "--out", str(out), "--no-progress", "--data-dir",
            setup.data_dir] + (["--amp"] if amp else []) + (["--channels-last"] if channels_last else [])
    return build_context(parse_config(argv, "gpu_check", ""), data=data)


def _engine_call(ctx, engine_name: str, particles: int, peak: dict) -> Callable[[], None]:
    """One cycle of one epoch of ``particles`` particles through the engine, as a run trains them (SWA, BN
    recalibration, per-epoch resume files, removed after each call); the peak GPU memory goes to ``peak``."""
    from core.artifacts.rundir import particle_unit
    from core.pruning import dense_masks
    from training.engines import select_engine
    from training.run import cycle_schedule

    engine, todo, cycles = select_engine(engine_name), list(range(particles)), itertools.count(100)
    start, masks, schedule = ctx.fresh_model().state_dict(), dense_masks(ctx.fresh_model()), cycle_schedule(ctx, 0)

    def call() -> None:
        cycle = next(cycles)
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        engine(ctx, cycle, start, masks, schedule, todo, lambda p, state: None)
        if ctx.device.type == "cuda":
            peak["mib"] = max(peak.get("mib", 0.0), torch.cuda.max_memory_allocated(ctx.device) / 2**20)
        for p in todo:
            ctx.finish_unit(particle_unit(cycle, p))

    return call


def _plain_call(ctx) -> Callable[[], None]:
    from benchmarks.bench_step import plain_loop

    return lambda: plain_loop(ctx.fresh_model(), ctx.data, 1, ctx.hyper.batch_size, 1, ctx.hyper.amp)


def _engine_model(model: str, setup: Setup, budget: Budget, particles: list[int]) -> dict:
    """The rows of one model: every variant x N x engine, each against the plain loop of the same variant."""
    from core.data import load_mnist1d, mnist1d_spec
    from training.engines import auto_engine

    image = model not in ("mlp", "cnn1d")
    variants = {"fp32": (False, False)}
    if image:
        variants |= {"amp": (True, False), "channels_last": (False, True)}
    # --amp and --channels-last do not stack (refused with --engine vectorized: they fail inside vmap)
    configs = [(v, n, e) for v in variants for n in particles for e in ("sequential", "vectorized")
               if e == "sequential" or v == "fp32"]
    units = len(variants) + sum(n for _, n, _ in configs)  # particle-epochs per round, plain loops included
    # SWA, BN recalibration and resume files on top of the plain loop's epoch, and room for stacked kernels
    # slower than N separate ones (on the H200, 1.2x per particle sequentially, 0.7-1.8x stacked): configurations
    # whose warm-up would not fit are skipped, so err on the safe side
    overhead = 1.4
    budget.need(1.0, model)
    with tempfile.TemporaryDirectory(dir=setup.scratch) as tmp:
        if image:
            probe = cifar_data(setup, setup.probe_samples())
            per_sample = _per_sample_epoch(_plain_call(_context(model, probe, setup, Path(tmp) / "probe", 1, False,
                                                                False)), probe.size("train"), setup.device)
            samples = _samples(setup, budget, per_sample * units * overhead, 3)
            data = cifar_data(setup, samples)
        else:
            data = load_mnist1d(mnist1d_spec(setup.data_dir)).to(setup.device)
            if setup.reduced:
                data = dataclasses.replace(data, x_train=data.x_train[:2 * setup.batch],
                                           y_train=data.y_train[:2 * setup.batch])
            samples = data.size("train")
        fns, peaks, names = [], {}, []
        for v, (amp, cl) in variants.items():
            ctx = _context(model, data, setup, Path(tmp) / v, max(particles), amp, cl)
            fns.append(_plain_call(ctx))
            names.append((v, 0, "plain"))
            for config in (c for c in configs if c[0] == v):
                peaks[config] = {}
                fns.append(_engine_call(ctx, config[2], config[1], peaks[config]))
                names.append(config)
        warm = _warm_up(fns, budget, setup.device)
        kept = [i for i, t in enumerate(warm) if isinstance(t, float)]
        rounds = paired_rounds([fns[i] for i in kept], _rounds(budget, sum(warm[i] for i in kept),
                                                              1 if setup.reduced else 5), setup.device,
                               until=budget.deadline)
    col = {names[i]: k for k, i in enumerate(kept)}
    why = dict(zip(names, warm, strict=True))
    rows = []
    for v, n, e in configs:
        if (v, n, e) not in col or (v, 0, "plain") not in col:
            reason = why[(v, n, e)] if (v, n, e) not in col else f"plain loop {why[(v, 0, 'plain')]}"
            rows.append({"model": model, "variant": v, "particles": n, "engine": e, "status": reason})
            continue
        i, base = col[(v, n, e)], col[(v, 0, "plain")]
        seconds = statistics.median(r[i] for r in rounds)
        rows.append({"model": model, "variant": v, "particles": n, "engine": e, "samples": samples,
                     "seconds_per_epoch": seconds, "seconds_per_epoch_50k": seconds * CIFAR_SAMPLES / samples
                     if image else None,
                     "plain_seconds_per_epoch": statistics.median(r[base] for r in rounds),
                     "ratio_vs_plain": ratio_summary([r[i] / r[base] for r in rounds]),
                     "ratio_vs_n_plain": ratio_summary([r[i] / (n * r[base]) for r in rounds]),
                     "ratio_vs_one": ratio_summary([r[i] / r[col[(v, 1, e)]] for r in rounds])
                     if (v, 1, e) in col else None,
                     "ratio_vs_fp32": ratio_summary([r[i] / r[col[("fp32", n, e)]] for r in rounds])
                     if v != "fp32" and ("fp32", n, e) in col else None,
                     "peak_gpu_mib": peaks[(v, n, e)].get("mib"), "rounds": len(rounds)})
    for v in variants:  # what --engine auto picks beside what was fastest
        for n in particles:
            pair = [r for r in rows if r["variant"] == v and r["particles"] == n and "status" not in r]
            if not pair:
                continue
            fastest = min(pair, key=lambda r: r["seconds_per_epoch"])["engine"]
            for r in pair:
                r["auto_picks"] = auto_engine(model, setup.device.type, n, stackable=v == "fp32")
                r["fastest"] = fastest
    return {"rows": rows}


def engines(setup: Setup, budget: Budget) -> dict:
    """Seconds per epoch and peak GPU memory of N particles, sequential vs vectorized, on cnn1d / MNIST-1D and on
    the CIFAR-sized network, against a plain PyTorch loop training one model of the same variant."""
    particles = [1, 2] if setup.reduced else [1, 2, 4, 8]
    rows, errors = [], {}
    for model, fraction in (("cnn1d", 0.3), (setup.cifar_model, 1.0)):
        try:
            rows += _engine_model(model, setup, budget.share(fraction), particles)["rows"]
        except OutOfBudget as err:
            errors[model] = f"skipped: budget ({err})"
        except Exception as err:  # one model failing leaves the other's rows
            errors[model] = describe(err)
    if not any("status" not in r for r in rows):
        kind = OutOfBudget if all(e.startswith("skipped") for e in errors.values()) else RuntimeError
        raise kind("; ".join(f"{m}: {e}" for m, e in errors.items()) or "every configuration was skipped")
    return {"rows": rows, "errors": errors, "epochs_per_call": 1, "batch_size": setup.batch}


# ---------------------------------------------------------------------------------------------------------
# 2. SWAMP's masked SWA step


def swa_step(setup: Setup, budget: Budget) -> dict:
    """SWAMP's masked SWA training (:func:`training.train.train_particle`, 50% mask, SWA over the last quarter
    of a cycle and one BN recalibration) against the same training in plain PyTorch on the CIFAR-sized network,
    same batches (:func:`benchmarks.bench_step.step_loops`)."""
    from benchmarks.bench_step import step_loops

    epochs = 1 if setup.reduced else 4
    probe = cifar_data(setup, setup.probe_samples())
    loops = step_loops(setup.cifar_model, probe, setup.device, 1, setup.batch)
    per_sample = _per_sample_epoch(loops["plain"], probe.size("train"), setup.device)
    samples = _samples(setup, budget, per_sample * 2.2 * epochs, 3)
    budget.need(2 * 2.2 * epochs * per_sample * samples, "a warm-up and a round of the two loops")
    loops = step_loops(setup.cifar_model, cifar_data(setup, samples), setup.device, epochs, setup.batch)
    fns = list(loops.values())
    warm = _all_warmed_up(fns, budget, setup.device)
    rounds = paired_rounds(fns, _rounds(budget, sum(warm), 1 if setup.reduced else 5), setup.device,
                           until=budget.deadline)
    names = list(loops)
    seconds = {k: statistics.median(r[i] for r in rounds) / epochs for i, k in enumerate(names)}
    return {"model": setup.cifar_model, "samples": samples, "epochs": epochs, "swa_epochs": max(1, epochs // 4),
            "rounds": len(rounds), "seconds_per_epoch": seconds,
            "masked_swa_vs_plain": ratio_summary([r[1] / r[0] for r in rounds]), "target": 1.10}


# ---------------------------------------------------------------------------------------------------------
# 3. Hessian trace, time to accuracy, and 4. scans: both on the particles of one small SWAMP run


def swamp_particles(setup: Setup) -> tuple[Path, Path]:
    """The two particle checkpoints of a 1-cycle, 2-particle SWAMP run of cnn1d on MNIST-1D (8 epochs, SWA; 1
    epoch reduced), trained once on the device into the scratch directory and shared by the sections."""
    from training.swamp import main as swamp_main

    run = setup.scratch / "swamp-run"
    a, b = (run / "cycle_00" / f"particle_0{p}.safetensors" for p in (0, 1))
    if not (a.is_file() and b.is_file()):
        argv = ["--particles", "2", "--cycles", "1", "--epochs", "1" if setup.reduced else "8", "--rewind-epochs",
                "0", "--out", str(run), "--data-dir", setup.data_dir, "--device", str(setup.device), "--no-progress"]
        if swamp_main(argv) != 0:
            raise RuntimeError(f"training the two particles failed: python -m training.swamp {' '.join(argv)}")
    return a, b


def hessian(setup: Setup, budget: Budget) -> dict:
    """Seconds to 5% and 2% relative standard error of the Hessian trace of a SWAMP-trained cnn1d particle
    (:func:`swamp_particles`) on MNIST-1D training samples: :func:`landscape.curvature.hessian_trace`
    (Hutch++) against PyHessian's Hutchinson, same device, batches and eval mode."""
    from benchmarks.harness import sync
    from benchmarks.hessian_time_to_accuracy import MIN_TERMS, ours_until, pyhessian_until
    from core.artifacts.checkpoint import build_model, load_checkpoint
    from core.data import load_mnist1d, mnist1d_spec
    from landscape.batches import MAX_PROBES

    targets = [0.05, 0.02]
    data = load_mnist1d(mnist1d_spec(setup.data_dir))
    samples, size = (256, 128) if setup.reduced else (2048, 512)
    model = build_model(load_checkpoint(swamp_particles(setup)[0]), setup.device).eval()
    budget.need(2.0, "the Hessian trace")
    x, y = data.x_train[:samples].to(setup.device), data.y_train[:samples].to(setup.device)
    batches = [(x[i:i + size], y[i:i + size]) for i in range(0, samples, size)]
    ours_until(model, batches[:1], 0.5, "hutchpp", 0, 64)  # warm-up of both code paths
    per_product = timed(lambda: pyhessian_until(model, batches[:1], [1.0], 0, 0.0, 2 * MIN_TERMS),
                        setup.device) / (2 * MIN_TERMS)
    # a round: PyHessian's probes (at least 16) and ours (some 40-60 products per target), each over all batches
    fit = int(budget.left() / (2 * 150 * per_product))
    budget.need(150 * per_product, "a round of the Hessian trace on one batch")
    batches = batches[:max(1, min(len(batches), fit))]
    samples = sum(len(b[1]) for b in batches)
    cap = 1.0 if setup.reduced else max(2.0, budget.left() / 8)  # PyHessian stopped (time projected) past this
    rounds: list[dict] = []
    for seed in range(1 if setup.reduced else 7):
        began = time.perf_counter()
        # at most the library's cap of probes on both sides; the targets stop both far earlier
        calls = [("pyhessian", lambda s=seed: pyhessian_until(model, batches, targets, s, cap, MAX_PROBES))]
        calls += [(t, lambda s=seed, t=t: ours_until(model, batches, t, "hutchpp", s, MAX_PROBES)) for t in targets]
        done = {}
        for name, call in calls[:: -1 if seed % 2 else 1]:
            sync(setup.device)
            done[name] = call()
            sync(setup.device)
        rounds.append(done)
        if budget.left() < 1.2 * (time.perf_counter() - began):
            break
    rows = []
    for t in targets:
        ref = [r["pyhessian"][t] for r in rounds]
        ours = [r[t] for r in rounds]
        rows.append({"target_rse": t, "pyhessian_seconds": statistics.median(r.seconds for r in ref),
                     "pyhessian_projected": any(r.projected for r in ref),
                     "ours_seconds": statistics.median(o.seconds for o in ours),
                     "ours_products": statistics.median(o.products for o in ours),
                     "pyhessian_probes": statistics.median(r.products for r in ref),
                     "ratio": ratio_summary([o.seconds / r.seconds for o, r in zip(ours, ref, strict=True)]),
                     "estimates": [ref[0].estimate, ours[0].estimate], "stderrs": [ref[0].stderr, ours[0].stderr],
                     # the two estimates of the first round, in combined standard errors: they should agree
                     "gap_in_stderrs": abs(ref[0].estimate - ours[0].estimate) / math.hypot(ref[0].stderr,
                                                                                          ours[0].stderr)})
    return {"model": "cnn1d, a particle of a SWAMP run (MNIST-1D)", "samples": samples, "batch_size": size,
            "rounds": len(rounds), "rows": rows, "target": 0.25}


# ---------------------------------------------------------------------------------------------------------
# 4. scans


def scans(setup: Setup, budget: Budget) -> dict:
    """A 41-point barrier between two SWAMP particles of cnn1d: the toolkit's loop (from the loaded checkpoints,
    and on the models and test split already on the device) against loss-landscapes' ``linear_interpolation``
    and against the stacked (vmap) prototype, same device and test split."""
    from benchmarks.bench_scans import scan_functions

    points = 41
    a, b = swamp_particles(setup)
    budget.need(2.0, "the scans")
    calls = scan_functions(str(a), str(b), points, setup.data_dir, str(setup.device))
    fns = list(calls.values())
    warm = _all_warmed_up(fns, budget, setup.device)
    rounds = [dict(zip(calls, r, strict=True)) for r in paired_rounds(
        fns, _rounds(budget, sum(warm), 1 if setup.reduced else 15), setup.device, until=budget.deadline)]
    seconds = {k: statistics.median(r[k] for r in rounds) for k in calls}
    return {"points": points, "rounds": len(rounds), "seconds_per_scan": seconds,
            "ours_vs_loss_landscapes": ratio_summary([r["ours"] / r["loss-landscapes"] for r in rounds]),
            "modules_vs_loss_landscapes": ratio_summary([r["ours, modules"] / r["loss-landscapes"] for r in rounds]),
            "stacked_vs_ours": ratio_summary([r["stacked"] / r["ours"] for r in rounds]), "target": 1.0,
            "stacked_is": "a benchmark prototype (torch.func.vmap over the interpolated states), not a toolkit path"}


SECTIONS: dict[str, tuple[Callable[[Setup, Budget], dict], float]] = {
    "engines": (engines, 0.45), "swa_step": (swa_step, 0.20), "hessian": (hessian, 0.25), "scans": (scans, 0.10)}
"""name -> (section, its share of the budget); run in this order, the most important first. A share is of what is
left when the section starts, so time one leaves goes to the next (on the H200 the scans take seconds)."""
