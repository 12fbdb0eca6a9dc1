"""What the framework integrations share: one particle's SWAMP duties inside someone else's trainer, and the
cycles around a ``train(model, masks, seed)`` function.

A SWAMP cycle (Choi et al. 2024): N particles trained from the same ticket under the same mask with different
seeds, each with SWA over its last epochs (Izmailov et al. 2018); their uniform weight average with BatchNorm
recomputed is the cycle's solution; the next mask removes ``ratio`` of the kept weights by global magnitude
(Frankle & Carbin 2019), and the next cycle rewinds to the ticket under it.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from core.averaging import SWA, average_states, recalibrate_batchnorm
from core.pruning import apply_masks, dense_masks, density, next_masks
from core.tickets import Ticket, rewind, take_ticket
from training.integrations.record import NullRecord, RunRecord, run_record

Masks = dict[str, Tensor]
Evaluate = Callable[[nn.Module], Mapping[str, float]]


def require(module: str, extra: str) -> ModuleType:
    """Import an optional framework, or raise a one-line ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{module} is not installed: pip install 'swamp-toolkit[{extra}]' ({error})") from None


class ParticleDuties:
    """What a callback does for one SWAMP particle, whatever the trainer: the mask applied at the start, pruned
    weights held at exactly 0, SWA over the last ``fraction`` of the epochs, the average loaded at the end.

    Pruned weights are held at 0 in two ways: a gradient hook on every masked parameter (g <- m * g, so that
    gradient clipping, accumulation and the optimizer's moments see the sparse network's gradient) and
    :meth:`after_step` (theta <- m * theta after every optimizer step, so that decoupled weight decay or
    moments from an earlier mask cannot revive a pruned weight).

    Args:
        masks: name -> 0/1 mask of the model's parameters (:func:`core.pruning.dense_masks` and a criterion).
        fraction: the share of the epochs SWA averages, in (0, 1].

    Example:
        >>> net = nn.Linear(2, 1, bias=False)
        >>> duties = ParticleDuties({"weight": torch.tensor([[1.0, 0.0]])}, fraction=0.5)
        >>> duties.start(net, epochs=2)
        >>> opt = torch.optim.AdamW(net.parameters(), lr=0.1)
        >>> for epoch in range(2):
        ...     opt.zero_grad()
        ...     net(torch.ones(3, 2)).sum().backward()
        ...     opt.step()
        ...     duties.after_step(net)
        ...     duties.end_epoch(net)
        >>> net = duties.finish(net)  # the SWA average of the last epoch
        >>> bool(net.weight[0, 1] == 0), duties.swa.count
        (True, 1)
    """

    def __init__(self, masks: Mapping[str, Tensor], fraction: float = 0.25):
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"the SWA fraction must lie in (0, 1], got {fraction!r}")
        self.masks, self.fraction = dict(masks), fraction
        self.swa: SWA | None = None
        self._hooks: list[Any] = []

    def start(self, model: nn.Module, epochs: int) -> None:
        """At fit start: prune ``model`` to the masks, hook its gradients, open an SWA over ``epochs``."""
        params = dict(model.named_parameters())
        unknown = [name for name in self.masks if name not in params]
        if unknown:
            raise ValueError(f"the masks name parameters the model does not have: {', '.join(unknown[:4])}")
        self.masks = {n: m.to(params[n].device) for n, m in self.masks.items()}
        apply_masks(model, self.masks)
        self.remove_hooks()
        self._hooks = [params[n].register_hook(lambda g, m=m: g * m) for n, m in self.masks.items()]
        self.swa = SWA(total=epochs, fraction=self.fraction, masks=self.masks)

    def after_step(self, model: nn.Module) -> None:
        """After an optimizer step: theta <- m * theta."""
        apply_masks(model, self.masks)

    def end_epoch(self, model: nn.Module) -> None:
        """At an epoch's end: the weights join the SWA average inside its window."""
        if self.swa is None:
            raise ValueError("end_epoch before start: the callback was not started")
        self.swa.update(model)

    def finish(self, model: nn.Module, bn_data: Iterable[Any] | None = None, *,
               device: torch.device | str | None = None) -> nn.Module:
        """At fit end: load the SWA average into ``model`` (BatchNorm recomputed on ``bn_data``); take the hooks off."""
        self.remove_hooks()
        if self.swa is None:
            raise ValueError("finish before start: the callback was not started")
        return self.swa.load_into(model, bn_data, device=device)

    def remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


@dataclass(frozen=True)
class Cycle:
    """One SWAMP cycle's outcome: the masks it trained under, their density, the solution (the particles'
    average, BatchNorm recomputed) as a state dict on the model's device, and ``metrics``: what its
    ``metrics.json`` holds (``cycle``, ``density``, ``sparsity``, ``seconds``, ``particles``: one object per
    particle, and, with an ``evaluate``, its numbers for each particle and for the ``average``)."""

    cycle: int
    masks: Masks
    density: float
    state: dict[str, Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)


def swamp_cycles(model: nn.Module, train: Callable[[nn.Module, Masks, int], nn.Module], *, cycles: int = 3,
                 particles: int = 3, ratio: float = 0.2, method: str = "global",
                 masks: Mapping[str, Tensor] | None = None, bn_data: Iterable[Any] | None = None,
                 device: torch.device | str | None = None, seed: int = 0, evaluate: Evaluate | None = None,
                 out: str | os.PathLike | None = None, model_spec: Mapping[str, Any] | None = None,
                 dataset_spec: Mapping[str, Any] | None = None, overwrite: bool = False) -> list[Cycle]:
    """SWAMP cycles around the caller's ``train(particle, masks, seed) -> trained particle``.

    Every cycle trains ``particles`` deep copies of ``model`` rewound (:func:`core.tickets.rewind`) to its
    weights (the ticket, :func:`core.tickets.take_ticket`) under the cycle's masks with seeds
    ``seed + 1000 * cycle + n``, averages them (:func:`core.averaging.average_states`), recomputes BatchNorm on
    ``bn_data`` and prunes ``ratio`` of the kept weights (:func:`core.pruning.next_masks` with ``method``) for
    the next cycle, so cycle k trains at density about (1 - ratio)^k.

    With ``out``, the cycles are written as they finish into a run directory of the runner's format
    (:mod:`training.integrations.record`, docs/format.md), which the landscape tools read.

    Args:
        model: the network at its ticket (not modified).
        train: trains one particle (already pruned to ``masks``) and returns it; it must keep pruned weights
            at 0 (the callbacks of this package do).
        cycles, particles: how many, >= 1.
        ratio: the fraction of kept weights each cycle removes, in [0, 1).
        method: a pruning criterion of :data:`core.pruning.CRITERIA` that needs no data.
        masks: the first cycle's masks (default :func:`core.pruning.dense_masks`: conv/linear/attention weights).
        bn_data: batches for BatchNorm recomputation of the average (any structure of :mod:`core.batch`).
        device: where ``bn_data``'s inputs are moved.
        seed: the first particle's seed.
        evaluate: ``evaluate(module) -> {name: number}``, called in eval mode on every trained particle and on
            each cycle's average; its numbers go into :attr:`Cycle.metrics` (and ``metrics.json``; ``test_acc``,
            ``test_loss`` and ``train_loss`` fill the columns of ``results.csv``). Non-finite numbers become None.
        out: a run directory to write (new, empty, or a run of the toolkit with ``overwrite``); None writes nothing.
        model_spec: with ``out``, the ``{"name", "kwargs"}`` that rebuilds ``model`` (:func:`core.models.model_spec`;
            ``PACKAGE.MODULE:CALLABLE`` for your own factory), checked against its tensors.
        dataset_spec: with ``out``, the data set the checkpoints record (docs/datasets.md; default
            :data:`training.integrations.record.IN_MEMORY_DATA`, which the tools need ``--dataset`` to replace).
        overwrite: replace the run directory ``out`` if it exists (never a directory the toolkit did not write).

    Returns:
        One :class:`Cycle` per cycle.

    Raises:
        ValueError: bad counts, ``out`` without ``model_spec``, or a particle with non-zero pruned weights.
        core.errors.UserError: an ``out`` that may not be written, or a spec the checkpoint format refuses.

    Example:
        >>> torch.manual_seed(0) and None
        >>> net = nn.Linear(8, 2)
        >>> def train(particle, masks, seed):
        ...     with torch.no_grad():
        ...         particle.weight.add_(torch.randn(2, 8, generator=torch.Generator().manual_seed(seed)))
        ...     apply_masks(particle, masks)
        ...     return particle
        >>> [round(c.density, 4) for c in swamp_cycles(net, train, cycles=3, particles=2, ratio=0.5)]
        [1.0, 0.5, 0.25]
    """
    for name, value in (("cycles", cycles), ("particles", particles)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    ticket = take_ticket(model)
    current = dict(masks) if masks is not None else dense_masks(model)
    settings = {"cycles": cycles, "particles": particles, "prune_ratio": ratio, "prune_method": method, "seed": seed}
    with run_record(out, ticket.state, current, model_spec=model_spec, dataset_spec=dataset_spec, settings=settings,
                    overwrite=overwrite) as record:
        return _cycles(model, train, ticket, current, cycles=cycles, particles=particles, ratio=ratio, method=method,
                       bn_data=bn_data, device=device, seed=seed, evaluate=evaluate, record=record)


def _numbers(evaluate: Evaluate | None, model: nn.Module) -> dict[str, float | None]:
    """``evaluate(model)`` in eval mode, as JSON numbers (non-finite ones None); empty without ``evaluate``."""
    if evaluate is None:
        return {}
    found = evaluate(model.eval())
    if not isinstance(found, Mapping) or not all(isinstance(k, str) and isinstance(v, int | float | Tensor)
                                                 and not isinstance(v, bool) for k, v in found.items()):
        raise TypeError(f"evaluate must return a mapping of names to numbers, not {found!r}")
    return {k: float(v) if math.isfinite(float(v)) else None for k, v in found.items()}


def _cycles(model: nn.Module, train: Callable[[nn.Module, Masks, int], nn.Module], ticket: Ticket,
            current: Masks, *, cycles: int, particles: int, ratio: float, method: str, bn_data: Iterable[Any] | None,
            device: torch.device | str | None, seed: int, evaluate: Evaluate | None,
            record: RunRecord | NullRecord) -> list[Cycle]:
    out = []
    for cycle in range(cycles):
        began = time.perf_counter()
        states, reports = [], []
        for n in range(particles):
            particle = rewind(copy.deepcopy(model), ticket, current)
            trained = train(particle, current, seed + 1000 * cycle + n)
            states.append({k: v.detach().to(ticket.state[k].device) for k, v in trained.state_dict().items()})
            record.particle(cycle, n, states[-1], current)
            reports.append({"particle": n, **_numbers(evaluate, trained)})
        solution = copy.deepcopy(model)
        solution.load_state_dict(average_states(states, current))
        if bn_data is not None:
            recalibrate_batchnorm(solution, bn_data, device=device)
        d = density(current)
        metrics = {"cycle": cycle, "density": d, "sparsity": 1.0 - d, "particles": reports}
        if evaluate is not None:
            metrics["average"] = _numbers(evaluate, solution)
        metrics["seconds"] = time.perf_counter() - began
        state = solution.state_dict()
        record.cycle(metrics, state, current)
        out.append(Cycle(cycle, current, d, state, metrics))
        if cycle + 1 < cycles:
            current = next_masks(method, solution, current, ratio)
    return out
