"""Weight averaging, stochastic weight averaging (SWA) and BatchNorm recalibration.

* :func:`average_states` is the uniform average of N particles' weights, theta_bar = (1/N) sum_n theta_n
  (SWAMP, Choi et al. 2024, Algorithm 1). Pruned coordinates are 0 in every particle, so they are
  exactly 0 in the average.
* :class:`RunningAverage` is SWA's running mean of snapshots (Izmailov et al. 2018),
  avg_{n+1} = avg_n + (theta - avg_n) / (n + 1); :class:`SWA` takes the snapshots over the last
  fraction of training and hands the result over as weights or as a ``torch.optim.swa_utils.AveragedModel``.
* Averaged weights invalidate BatchNorm running statistics; :func:`recalibrate_batchnorm` recomputes
  them with one pass over training data in train mode, as a cumulative (not exponential) average,
  like torch.optim.swa_utils.update_bn. It costs one forward pass over the data it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from core.batch import apply_model, batch_parts, to_device

__all__ = ["SWA", "RunningAverage", "apply_model", "average_states", "has_batchnorm", "masked_state",
           "recalibrate_batchnorm"]

State = dict[str, Tensor]


def masked_state(state: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None) -> State:
    """``state`` with every masked entry multiplied by its mask (a new dict; the others are shared)."""
    return {k: v * masks[k].to(v.device) if masks is not None and k in masks else v for k, v in state.items()}


def average_states(states: Sequence[Mapping[str, Tensor]], masks: Mapping[str, Tensor] | None = None) -> State:
    """The uniform average of N states, theta_bar = (1/N) sum_n theta_n (SWAMP's particle average).

    Args:
        states: state dicts of the same model (particles), N >= 1.
        masks: name -> mask; the masked entries of the average are multiplied by it (pruned stays 0).

    Returns:
        The average of every floating-point entry; integer entries (BatchNorm's ``num_batches_tracked``)
        are the first state's.

    Example:
        >>> a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
        >>> b = {"w": torch.tensor([3.0, 0.0]), "n": torch.tensor(5)}
        >>> avg = average_states([a, b])
        >>> avg["w"].tolist(), int(avg["n"])
        ([2.0, 1.0], 3)
        >>> average_states([a, b], masks={"w": torch.tensor([1.0, 0.0])})["w"].tolist()
        [2.0, 0.0]
    """
    first = states[0]
    out: State = {}
    for key, value in first.items():
        if value.is_floating_point():
            total = torch.stack([s[key] for s in states]).sum(0)
            out[key] = total / len(states)
        else:
            out[key] = value.clone()
    return masked_state(out, masks) if masks is not None else out


class RunningAverage:
    """The running mean of state snapshots, avg_{n+1} = avg_n + (theta - avg_n) / (n + 1) (SWA; Izmailov
    et al. 2018): floating-point entries averaged, integer buffers taken from the latest snapshot.

    Args:
        state: an average to continue (a resumed one), or None to start empty.
        count: how many snapshots ``state`` averages.

    Example:
        >>> avg = RunningAverage()
        >>> for w in (1.0, 2.0, 6.0):
        ...     avg.update({"w": torch.tensor([w])})
        >>> avg.state["w"].tolist(), avg.count
        ([3.0], 3)
    """

    def __init__(self, state: Mapping[str, Tensor] | None = None, count: int = 0):
        self.state: State = {k: v.detach().clone() for k, v in (state or {}).items()}
        self.count = count

    def update(self, snapshot: Mapping[str, Tensor]) -> None:
        """Add one snapshot (a state dict; copied, not kept)."""
        if self.count == 0:
            self.state = {k: v.detach().clone() for k, v in snapshot.items()}
        else:
            for key, value in snapshot.items():
                if value.is_floating_point():
                    self.state[key] += (value.detach() - self.state[key]) / (self.count + 1)
                else:
                    self.state[key] = value.detach().clone()
        self.count += 1


class SWA:
    """Stochastic weight averaging (Izmailov et al. 2018) over the last ``fraction`` of ``total`` updates:
    theta_SWA = (1/K) sum_{t >= start} theta_t, start = total - max(1, round(fraction * total)), K the
    snapshots taken. Call :meth:`update` once per epoch (SWAMP averages end-of-epoch weights) or once per
    step; the learning rate schedule stays the user's (e.g. constant ``swa_lr`` in the window, or
    ``torch.optim.swa_utils.SWALR``).

    Args:
        total: the number of :meth:`update` calls of the whole training.
        fraction: the averaged share of them, in (0, 1].
        masks: name -> mask, applied to the average (pruned weights stay exactly 0).

    Example:
        >>> net = nn.Linear(1, 1, bias=False)
        >>> swa = SWA(total=4, fraction=0.5)
        >>> for w in (1.0, 2.0, 3.0, 5.0):  # epochs 0..3; 2 and 3 are averaged
        ...     _ = net.weight.data.fill_(w)
        ...     _ = swa.update(net)
        >>> swa.start, swa.count, swa.state()["weight"].item()
        (2, 2, 4.0)
        >>> swa.averaged_model(net).module.weight.item()  # a torch.optim.swa_utils.AveragedModel
        4.0
    """

    def __init__(self, total: int, fraction: float = 0.25, masks: Mapping[str, Tensor] | None = None):
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ValueError(f"total must be a positive integer (the number of updates), got {total!r}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
        self.start = total - max(1, round(fraction * total))
        self.total, self.masks, self.seen = total, masks, 0
        self.average = RunningAverage()

    @property
    def count(self) -> int:
        """Snapshots averaged so far."""
        return self.average.count

    def update(self, model: nn.Module) -> bool:
        """Count one update; inside the window add ``model``'s weights to the average. True if it did."""
        t, self.seen = self.seen, self.seen + 1
        if t < self.start:
            return False
        self.average.update(model.state_dict())
        return True

    def state(self) -> State:
        """The averaged state dict, masks applied (ValueError before the first snapshot)."""
        if self.count == 0:
            raise ValueError(f"SWA has no snapshot yet: {self.seen} updates seen, the window starts at {self.start}")
        return masked_state(self.average.state, self.masks)

    def load_into(self, model: nn.Module, bn_data: Iterable[Any] | None = None, *,
                  device: torch.device | str | None = None) -> nn.Module:
        """Load the average into ``model`` and, given ``bn_data``, recompute its BatchNorm statistics
        (:func:`recalibrate_batchnorm`); returns ``model``."""
        model.load_state_dict(self.state())
        if bn_data is not None:
            recalibrate_batchnorm(model, bn_data, device=device)
        return model

    def averaged_model(self, model: nn.Module) -> AveragedModel:
        """A ``torch.optim.swa_utils.AveragedModel`` of ``model`` holding the average and its count, so that
        its ``update_parameters`` continues it and ``swa_utils.update_bn`` works on it."""
        averaged = AveragedModel(model)
        averaged.module.load_state_dict(self.state())
        averaged.n_averaged.fill_(self.count)
        return averaged


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], *,
                          device: torch.device | str | None = None) -> None:
    """Recompute every BatchNorm layer's running mean and variance from ``batches``, as the cumulative
    average over them (momentum None), like ``torch.optim.swa_utils.update_bn`` (Izmailov et al. 2018):
    averaged weights make the stored statistics wrong.

    Args:
        model: the network, modified in place and left in eval mode (a model without BatchNorm: unchanged).
        batches: an iterable of batches of any structure of :mod:`core.batch`: bare input tensors,
            ``(inputs, targets)`` tuples (only the inputs are used) or mappings (all keys but ``"labels"``
            are the model's keyword inputs).
        device: where each batch's inputs are moved first (None: where they are).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
        >>> x = torch.randn(64, 2)
        >>> recalibrate_batchnorm(net, [x[:32], (x[32:], None)])
        >>> torch.allclose(net[1].running_mean, net[0](x).mean(0), atol=1e-6)
        True
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for batch in batches:
        apply_model(model, to_device(batch_parts(batch)[0], device))
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    model.eval()
