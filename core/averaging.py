"""Weight averaging and BatchNorm recalibration.

* :func:`average_states` is the uniform average of N particles' weights, theta_bar = (1/N) sum_n theta_n
  (SWAMP, Choi et al. 2024, Algorithm 1). Pruned coordinates are 0 in every particle, so they are
  exactly 0 in the average.
* :class:`RunningAverage` is SWA's running mean of snapshots (Izmailov et al. 2018),
  avg_{n+1} = avg_n + (theta - avg_n) / (n + 1).
* Averaged weights invalidate BatchNorm running statistics; :func:`recalibrate_batchnorm` recomputes
  them with one pass over training data in train mode, as a cumulative (not exponential) average,
  like torch.optim.swa_utils.update_bn. It costs one forward pass over the data it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

State = dict[str, Tensor]


def average_states(states: Sequence[Mapping[str, Tensor]]) -> State:
    """Uniform average of floating-point entries; integer buffers (BN batch counts) from the first."""
    first = states[0]
    out: State = {}
    for key, value in first.items():
        if value.is_floating_point():
            total = torch.stack([s[key] for s in states]).sum(0)
            out[key] = total / len(states)
        else:
            out[key] = value.clone()
    return out


class RunningAverage:
    """Running mean of state snapshots (floating-point entries; integer buffers from the latest)."""

    def __init__(self, state: Mapping[str, Tensor] | None = None, count: int = 0):
        self.state: State = {k: v.detach().clone() for k, v in (state or {}).items()}
        self.count = count

    def update(self, snapshot: Mapping[str, Tensor]) -> None:
        if self.count == 0:
            self.state = {k: v.detach().clone() for k, v in snapshot.items()}
        else:
            for key, value in snapshot.items():
                if value.is_floating_point():
                    self.state[key] += (value.detach() - self.state[key]) / (self.count + 1)
                else:
                    self.state[key] = value.detach().clone()
        self.count += 1


def apply_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping of named inputs (a Hugging Face batch), ``model(inputs)`` otherwise."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
    """Recompute every BatchNorm layer's running mean/variance from ``batches`` (cumulative average).

    Leaves the model in eval mode. A model without BatchNorm is left unchanged.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for x, _ in batches:
        apply_model(model, x)
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    model.eval()
