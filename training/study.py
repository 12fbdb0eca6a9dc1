"""``python -m training.study --out DIR``: the whole SWAMP experiment grid as resumable sub-runs.

Every method below runs for every seed as an ordinary run directory ``DIR/runs/METHOD-sSEED``
(CONTRACT.md section 2), so every landscape tool reads it; ``DIR/study.json`` (written atomically
after every change) lists them with their status. The same command continues an interrupted study:
finished sub-runs are skipped, unfinished ones resume at their last finished epoch.

Methods (Choi et al. 2024, sections 4-5 and their ablations), each with its role (:data:`ROLES`):

=================  ==============  =============================================================
method             role            what
=================  ==============  =============================================================
``imp``            ``imp``         IMP with weight rewinding (Frankle et al. 2020): one particle,
                                   plain SGD
``swa``            ``swa``         IMP + SWA (Izmailov et al. 2018): one particle with SWA (N = 1
                                   of the ablation)
``particles``      ``particles``   N particles averaged, no SWA
``swamp-nN``       ``swamp``       SWAMP, the central arm every comparison is about: N = 4 (the
                                   smallest N if 4 is not in the grid)
``swamp-nN``       ``swamp-n``     SWAMP with the other N = 2, 8 SWA particles (the N ablation)
``swamp-plus``     ``swamp-plus``  SWAMP+: one particle before ``plus_cycle``, N particles from it
``oneshot-*``      ``oneshot``     one-shot global magnitude / random pruning of the dense solution
                                   to every IMP density, then training from the ticket
                                   (:mod:`training.oneshot`)
=================  ==============  =============================================================

The default grid (``--preset mnist1d``) runs 15 cycles, so that the last trains at density
0.8^14 = 4.4% (>= 95% sparsity), on three seeds. ``--quick`` is a seconds-long grid for tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.atomic import atomic_write_text
from training.config import check_data_dir, check_seed, resolve_config
from training.device import resolve_device
from training.errors import ENVIRONMENT_ERRNOS, ArgumentParser, UserError, run_cli
from training.lock import exclusive
from training.ownership import check_out_text, check_usable_directory
from training.presets import PRESETS
from training.rundir import RunDir
from training.workers import check_jobs, set_threads, spawn_pool, worker_threads

FORMAT = "swamp-study/1"
MANIFEST = "study.json"
STUDY_CYCLES = 15  # 0.8^14 = 4.4% density in the last cycle
ROLES = ("imp", "swa", "particles", "swamp", "swamp-n", "swamp-plus", "oneshot")


@dataclass(frozen=True)
class Method:
    """One arm of the study: the RunConfig fields it sets, whether it prunes one-shot, and its role.

    ``role`` (one of :data:`ROLES`, recorded in ``study.json``) is what the study's readers select and
    compare methods by, so that no reader parses method names; None: not recorded (as in the
    manifests of studies started before methods had roles).
    """

    name: str
    particles: int = 1
    swa: bool = True
    particles_from_cycle: int = 0
    prune_method: str = "global"
    oneshot: bool = False
    role: str | None = None

    def overrides(self) -> dict[str, Any]:
        return {"particles": self.particles, "swa": self.swa, "particles_from_cycle": self.particles_from_cycle,
                "prune_method": self.prune_method}


def grid(particles: Sequence[int], plus_cycle: int, plus_particles: int, averaged: int) -> tuple[Method, ...]:
    """IMP, SWA only, particles only (``averaged`` of them), one-shot, SWAMP with each N and SWAMP+.

    Cheap and central arms first, so that a study cut short still holds the main comparison.
    """
    central, *others = sorted(particles, key=lambda n: (n != 4, n))
    return (Method("imp", swa=False, role="imp"), Method("swa", role="swa"),
            Method(f"swamp-n{central}", central, role="swamp"),
            Method("particles", averaged, swa=False, role="particles"),
            Method("oneshot-magnitude", swa=False, oneshot=True, role="oneshot"),
            Method("oneshot-random", swa=False, prune_method="random", oneshot=True, role="oneshot"),
            *(Method(f"swamp-n{n}", n, role="swamp-n") for n in others),
            Method("swamp-plus", plus_particles, particles_from_cycle=plus_cycle, role="swamp-plus"))


@dataclass(frozen=True)
class StudyPlan:
    """What a study runs: the preset, settings shared by every sub-run, seeds and methods."""

    preset: str
    settings: dict[str, Any]
    seeds: tuple[int, ...]
    methods: tuple[Method, ...]
    quick: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "settings": self.settings, "seeds": list(self.seeds),
                "methods": [asdict(m) for m in self.methods], "quick": self.quick}


def default_plan(preset: str, seeds: Sequence[int] = (0, 1, 2)) -> StudyPlan:
    """The full grid: 15 cycles, N = 2, 4, 8, particles-only with 4, SWAMP+ (4 particles) from cycle 5."""
    return StudyPlan(preset, {"cycles": STUDY_CYCLES}, tuple(seeds), grid((2, 4, 8), 5, 4, 4))


def quick_plan(preset: str, seeds: Sequence[int] = (0, 1)) -> StudyPlan:
    """A grid for tests (about half a minute): 2 cycles of 1 epoch, N = 3 (three particles make a
    plane), particles-only and SWAMP+ (from cycle 1) with 2."""
    settings = {"cycles": 2, "epochs": 1, "rewind_epochs": 1}
    return StudyPlan(preset, settings, tuple(seeds), grid((3,), 1, 2, 2), quick=True)


@dataclass
class SubRun:
    """One (method, seed) run directory of the study and where it stands."""

    name: str
    method: str
    seed: int
    particles: int
    path: str
    status: str = "pending"
    cycles_done: int = 0
    seconds: float = 0.0
    error: str | None = None


def sub_runs(plan: StudyPlan) -> list[SubRun]:
    """Seed-major order, so an interrupted study has complete seeds first."""
    return [SubRun(f"{m.name}-s{s}", m.name, s, m.particles, f"runs/{m.name}-s{s}") for s in plan.seeds
            for m in plan.methods]


def cycles_done(path: str | Path) -> int:
    """Finished cycles of a run directory: how many of cycle_00, cycle_01, ... have their metrics."""
    rundir, k = RunDir(Path(path)), 0
    while rundir.metrics(k).is_file():
        k += 1
    return k


def write_manifest(root: Path, plan: StudyPlan, runs: Sequence[SubRun]) -> None:
    body = {"format": FORMAT, **plan.to_json(), "runs": [asdict(r) for r in runs],
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(root / MANIFEST, json.dumps(body, indent=2) + "\n")


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The study's ``study.json``; one clear error if there is none."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} does not exist; is {root} a study directory (python -m training.study --out DIR)?")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is unreadable ({err}); restore it, or start the study again in another --out") \
            from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list):
        raise UserError(f"{path} is not a study's manifest (a JSON object with a list of runs expected); restore "
                        "it, or start the study again in another --out")
    return manifest


def check_same_plan(root: Path, plan: StudyPlan) -> None:
    """An existing study must be continued with the grid it was started with; it may gain seeds.

    Adding seeds (``--seeds`` listing the old ones first, then new ones) runs only the new sub-runs;
    every other change (preset, settings, methods, fewer or reordered seeds) is refused. A manifest
    written before methods recorded their ``role`` is compared without it (the roles are then recorded).
    """
    if not (root / MANIFEST).is_file():
        return
    saved = read_manifest(root)
    new = json.loads(json.dumps(plan.to_json()))
    saved_methods = saved.get("methods")
    if isinstance(saved_methods, list) and not any(isinstance(m, dict) and "role" in m for m in saved_methods):
        new["methods"] = [{k: v for k, v in m.items() if k != "role"} for m in new["methods"]]
    old_seeds = saved.get("seeds") or []
    same_rest = {k: saved.get(k) for k in new if k != "seeds"} == {k: v for k, v in new.items() if k != "seeds"}
    if not same_rest or new["seeds"][:len(old_seeds)] != old_seeds:
        raise UserError(f"{root} holds a study with other settings ({MANIFEST}); continue it with the flags it "
                        f"was started with (more seeds may be added after seeds {','.join(map(str, old_seeds))}), "
                        "or choose another --out")


def sub_config(plan: StudyPlan, method: Method, seed: int, path: Path, runtime: dict[str, Any]) -> Any:
    """The sub-run's RunConfig: preset < study settings < method < seed, resuming what exists."""
    exists = RunDir(path).config.is_file()
    values = {"preset": plan.preset, **plan.settings, **method.overrides(), "seed": seed, "out": str(path),
              "resume": exists, "overwrite": not exists, **runtime}
    return resolve_config(argparse.Namespace(**values))


def environment_failure(err: BaseException) -> bool:
    """Whether ``err`` is a failure of the machine (full disk, file-size limit, read-only path, ...), which
    every later sub-run would meet as well: it stops the study instead of failing one sub-run."""
    return isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS


def run_sub_run(plan: StudyPlan, method: Method, seed: int, path: Path, runtime: dict[str, Any],
                threads: int | None = None) -> tuple[str, str | None]:
    """Run (or resume) one sub-run; returns ``(status, error)``. Runs in a worker process with ``--jobs``.

    An :func:`environment_failure` is raised, not returned.
    """
    # the trainers load here, not at import: the study's readers import this module for its manifest
    from training.oneshot import run_oneshot
    from training.run import run_swamp

    set_threads(threads)
    try:
        cfg = sub_config(plan, method, seed, path, runtime)
        (run_oneshot if method.oneshot else run_swamp)(cfg)
        return "done", None
    except Exception as err:  # one broken sub-run must not stop the grid
        if environment_failure(err):
            raise
        return "failed", f"{type(err).__name__}: {err}"


def run_study(root: str | Path, plan: StudyPlan, runtime: dict[str, Any] | None = None,
              log: Callable[[str], None] = print, jobs: int = 1) -> list[SubRun]:
    """Run (or continue) every sub-run of ``plan`` under ``root``; returns their final status.

    A sub-run that fails is marked ``failed`` with its error and the others still run; an
    :func:`environment_failure` stops the study (the sub-runs it interrupts are left ``partial``). With ``jobs`` > 1
    that many sub-runs train at once, each in its own (spawned) process with ``1/jobs`` of this process's
    torch threads; this process alone writes the manifest. Sub-runs are independent and seeded, so the
    checkpoints are the same as with ``jobs = 1`` (given the same threads per run).
    """
    check_jobs(jobs)
    root = check_out_text(root)
    check_usable_directory(root, MANIFEST, "study directory", "--out")  # never write into a user's folder
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root, "study"):  # one process drives a study (its sub-runs lock their own directories)
        return _run(root, plan, runtime, log, jobs)


def _run(root: Path, plan: StudyPlan, runtime: dict[str, Any] | None, log: Callable[[str], None],
         jobs: int) -> list[SubRun]:
    check_same_plan(root, plan)
    methods = {m.name: m for m in plan.methods}
    cycles = plan.settings.get("cycles") or PRESETS[plan.preset]["cycles"]
    runs = sub_runs(plan)
    saved = {r["name"]: r for r in read_manifest(root)["runs"]} if (root / MANIFEST).is_file() else {}
    for r in runs:
        r.seconds = float(saved.get(r.name, {}).get("seconds", 0.0))  # time spent in earlier invocations
        r.cycles_done = cycles_done(root / r.path)
        r.status = "done" if r.cycles_done >= cycles else ("partial" if r.cycles_done else "pending")
    write_manifest(root, plan, runs)
    todo = []
    for r in runs:
        if r.status == "done":
            log(f"skip {r.name}: finished")
        else:
            todo.append(r)

    def start(r: SubRun) -> float:
        r.status, r.error = "running", None
        write_manifest(root, plan, runs)
        log(f"run  {r.name} ({r.cycles_done}/{cycles} cycles done)")
        return time.perf_counter()

    def finish(r: SubRun, began: float, status: str, error: str | None) -> None:
        r.status, r.error = status, error
        r.seconds += time.perf_counter() - began
        r.cycles_done = cycles_done(root / r.path)
        if error:
            log(f"FAILED {r.name}: {error}")
        write_manifest(root, plan, runs)

    if jobs == 1:
        for r in todo:
            began = start(r)
            try:
                status, error = run_sub_run(plan, methods[r.method], r.seed, root / r.path, runtime or {})
            except BaseException:
                finish(r, began, "partial", None)
                raise
            finish(r, began, status, error)
        return runs
    _run_parallel(todo, jobs, start, finish,
                  lambda r: (plan, methods[r.method], r.seed, root / r.path, runtime or {}))
    return runs


def _run_parallel(todo: list[SubRun], jobs: int, start: Callable[[SubRun], float],
                  finish: Callable[[SubRun, float, str, str | None], None],
                  arguments: Callable[[SubRun], tuple]) -> None:
    """Keep ``jobs`` worker processes busy with ``todo`` in order; interrupted runs are left ``partial``."""
    from concurrent.futures import FIRST_COMPLETED, wait

    threads = worker_threads(jobs)
    queue, active = list(todo), {}
    with spawn_pool(jobs) as pool:
        try:
            while queue or active:
                while queue and len(active) < jobs:
                    r = queue.pop(0)
                    began = start(r)
                    active[pool.submit(run_sub_run, *arguments(r), threads)] = (r, began)
                done, _ = wait(active, return_when=FIRST_COMPLETED)
                for future in done:
                    r, began = active[future]
                    try:
                        status, error = future.result()
                    except Exception as err:
                        if environment_failure(err):
                            raise  # r is still active: left partial below, with the others
                        # the worker process itself died (e.g. killed for memory)
                        status, error = "failed", f"worker process: {type(err).__name__}: {err}"
                    del active[future]
                    finish(r, began, status, error)
        except BaseException:
            for future, (r, began) in active.items():
                future.cancel()
                finish(r, began, "partial", None)
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def build_parser() -> argparse.ArgumentParser:
    full, quick = (", ".join(m.name for m in plan("mnist1d").methods) for plan in (default_plan, quick_plan))
    parser = ArgumentParser(
        prog="python -m training.study",
        description="Run the SWAMP study grid (IMP, SWA only, particles only, SWAMP N = 2/4/8, SWAMP+, one-shot "
                    "magnitude/random pruning) for several seeds into one directory; rerun to continue it. "
                    "The directory's format: docs/format.md.")
    parser.add_argument("--out", required=True, metavar="DIR", help="study directory")
    parser.add_argument("--quick", action="store_true",
                        help="a small grid to try the pipeline: seeds 0,1, 2 cycles of 1 epoch, SWAMP with N = 3 "
                             "(under a minute on two CPU cores)")
    parser.add_argument("--preset", default="mnist1d", choices=list(PRESETS),
                        help="hyperparameter preset (default mnist1d)")
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="seeds (default 0,1,2; quick 0,1); a finished study can be extended with more seeds")
    parser.add_argument("--methods", default=None, metavar="NAME,...",
                        help=f"run only these methods (default all: {full}; with --quick: {quick})")
    for name in ("epochs", "cycles", "rewind_epochs"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, metavar="N",
                            help=f"override the plan's {name} (a reduced study; recorded in {MANIFEST})")
    parser.add_argument("--jobs", type=int, default=1, metavar="K",
                        help="train K sub-runs at once in separate processes (e.g. one per CPU core or GPU "
                             "memory share); each gets 1/K of the torch threads (default 1)")
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="where datasets live (default data)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--download", action="store_true", default=None,
                        help="allow torchvision to download CIFAR (default off)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: only on a terminal)")
    return parser


def _listed(flag: str, text: str, example: str) -> list[str]:
    """The items of a comma-separated flag value; an empty item or a repeated one is refused."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise UserError(f"{flag} takes a comma-separated list such as {example}, not {text!r}")
    repeated = next((item for k, item in enumerate(items) if item in items[:k]), None)
    if repeated is not None:
        raise UserError(f"{flag} lists {repeated!r} twice")
    return items


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds S,S,...``: distinct integers in [0, 2^32)."""
    seeds = []
    for item in _listed("--seeds", text, "0,1,2"):
        try:
            seed = int(item)
        except ValueError:
            raise UserError(f"--seeds takes integers separated by commas, such as 0,1,2; {item!r} is not one") from None
        check_seed(seed, "--seeds")
        seeds.append(seed)
    return tuple(seeds)


def plan_from_args(args: argparse.Namespace) -> StudyPlan:
    """The plan the flags describe (not yet checked against RunConfig: see :func:`check_plan`)."""
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    plan = quick_plan(args.preset, *([seeds] if seeds else [])) if args.quick else \
        default_plan(args.preset, *([seeds] if seeds else []))
    settings = {**plan.settings, **{k: getattr(args, k) for k in ("epochs", "cycles", "rewind_epochs")
                                    if getattr(args, k) is not None}}
    methods = plan.methods
    if args.methods is not None:
        wanted = _listed("--methods", args.methods, "imp,swamp-n4")
        unknown = [name for name in wanted if name not in {m.name for m in methods}]
        if unknown:
            raise UserError(f"unknown method {unknown[0]!r} in --methods; choose from "
                            f"{', '.join(m.name for m in methods)}")
        methods = tuple(m for m in methods if m.name in wanted)
    return StudyPlan(plan.preset, settings, plan.seeds, methods, plan.quick)


def check_plan(plan: StudyPlan, runtime: dict[str, Any]) -> None:
    """Resolve every sub-run's RunConfig (and the runtime flags) now, so that an impossible setting is one
    error naming its flag before anything runs, not one failed sub-run each."""
    cycles = plan.settings.get("cycles") or PRESETS[plan.preset]["cycles"]
    configs = []
    for method in plan.methods:
        if cycles >= 1 and 0 < method.particles_from_cycle >= cycles:  # clearer than RunConfig's message
            raise UserError(f"method {method.name} adds its particles at cycle {method.particles_from_cycle}, so it "
                            f"needs --cycles above {method.particles_from_cycle}; give more cycles or leave it out "
                            "with --methods")
        for seed in plan.seeds:
            values = {"preset": plan.preset, **plan.settings, **method.overrides(), "seed": seed,
                      "out": f"runs/{method.name}-s{seed}", **runtime}
            try:
                configs.append(resolve_config(argparse.Namespace(**values)))
            except UserError as err:
                raise UserError(f"sub-run {method.name}-s{seed}: {err}") from None
    if "device" in runtime:
        resolve_device(runtime["device"])
    for cfg in configs[:1]:  # every sub-run reads the same data
        check_data_dir(cfg)


def parse_study(argv: Sequence[str] | None) -> tuple[argparse.Namespace, StudyPlan, dict[str, Any]]:
    """The flags, the checked plan and the runtime settings of ``python -m training.study``; writes nothing."""
    args = build_parser().parse_args(argv)
    check_jobs(args.jobs)
    runtime = {k: getattr(args, k) for k in ("data_dir", "device", "progress", "download")
               if getattr(args, k) is not None}
    plan = plan_from_args(args)
    check_plan(plan, runtime)
    return args, plan, runtime


def main(argv: Sequence[str] | None = None) -> int:
    args, plan, runtime = parse_study(argv)
    runs = run_study(args.out, plan, runtime, jobs=args.jobs)
    failed = [r.name for r in runs if r.status != "done"]
    print(f"study {args.out}: {len(runs) - len(failed)}/{len(runs)} sub-runs done"
          + (f"; not done: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main, rerun="rerun the same command to continue (finished sub-runs are kept)"))
