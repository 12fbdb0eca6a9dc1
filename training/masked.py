"""Keep pruned weights at exactly zero under any ``torch.optim`` optimizer, with public torch hooks only.

:func:`mask_optimizer` registers two hooks on the optimizer (``register_step_pre_hook`` and
``register_step_post_hook``, torch >= 2.0):

* before every step, each masked weight's gradient is multiplied by its mask, g <- m * g: the optimizer
  sees the gradient of the sparse network, so momentum buffers and Adam's moments stay 0 at pruned
  coordinates (with SGD's coupled weight decay lambda * theta = 0 there too);
* after every step, each masked weight is multiplied by its mask, theta <- m * theta: whatever the
  optimizer did (AdamW's decoupled decay, Adam's moments left over from before a mask changed, an
  optimizer that mixes coordinates), a pruned weight is exactly 0 when ``step()`` returns.

On an optimizer that already keeps them at 0 (SGD with masked gradients) the second hook changes no bit:
it multiplies kept weights by 1.0 and zeros by 0.0. Masks are those of :mod:`core.pruning` (Frankle &
Carbin 2019): name -> float tensor of 0s and 1s, names as ``model.named_parameters()`` gives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


class MaskedOptimizer:
    """The hooks :func:`mask_optimizer` registers; :meth:`remove` takes them off again.

    ``masks`` may be replaced (``handle.masks = new_masks``) after a pruning step; the next step uses them.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> opt = torch.optim.Adam(net.parameters())
        >>> handle = mask_optimizer(opt, net, {"weight": torch.tensor([[1.0, 0.0]])})
        >>> handle.masks = {"weight": torch.tensor([[0.0, 0.0]])}  # after pruning again
        >>> handle.remove()
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, masks: Mapping[str, Tensor],
                 weights: bool = True):
        params = dict(model.named_parameters())
        self.optimizer, self._params = optimizer, params
        self._optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.masks = masks
        self._handles: list[RemovableHandle] = [optimizer.register_step_pre_hook(self._mask_gradients)]
        if weights:
            self._handles.append(optimizer.register_step_post_hook(self._mask_weights))

    @property
    def masks(self) -> dict[str, Tensor]:
        """The masks the hooks apply (each on its weight's device); assign new masks after pruning."""
        return self._masks

    @masks.setter
    def masks(self, masks: Mapping[str, Tensor]) -> None:
        unknown = [name for name in masks if name not in self._params]
        if unknown:
            raise ValueError(f"masks name weights the model does not have: {', '.join(unknown[:4])}")
        self._masks = {n: m.to(self._params[n].device) for n, m in masks.items()}
        self._pairs = [(self._params[n], m) for n, m in self._masks.items() if id(self._params[n]) in self._optimized]

    @torch.no_grad()
    def _mask_gradients(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        for p, m in self._pairs:
            if p.grad is not None:
                p.grad.mul_(m)

    @torch.no_grad()
    def _mask_weights(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        for p, m in self._pairs:
            p.mul_(m)

    def remove(self) -> None:
        """Take the hooks off the optimizer."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def mask_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, masks: Mapping[str, Tensor], *,
                   weights: bool = True) -> MaskedOptimizer:
    """Make every ``optimizer.step()`` keep the pruned weights of ``model`` at exactly 0 (see the module).

    Args:
        optimizer: any ``torch.optim.Optimizer`` over (some of) ``model``'s parameters.
        model: the network whose parameters ``masks`` names.
        masks: name -> mask (on the weight's device), e.g. from :func:`core.pruning.dense_masks` and a
            criterion of :data:`core.pruning.CRITERIA`. The weights should already be masked
            (:func:`core.pruning.apply_masks`) before the first step.
        weights: also zero the pruned weights after each step (default); False masks only the gradients
            (enough for SGD, bit for bit what the runner has always done).

    Returns:
        A :class:`MaskedOptimizer` handle (``.remove()``, ``.masks``).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> masks = {"weight": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])}
        >>> with torch.no_grad():
        ...     _ = net.weight.mul_(masks["weight"])
        >>> opt = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.1)
        >>> handle = mask_optimizer(opt, net, masks)
        >>> for _ in range(5):
        ...     opt.zero_grad()
        ...     net(torch.randn(4, 3)).pow(2).sum().backward()
        ...     opt.step()
        >>> int(net.weight.count_nonzero())  # the 4 kept weights; the 2 pruned are 0
        4
    """
    return MaskedOptimizer(optimizer, model, masks, weights)
