"""Tickets and rewinding: a copy of a network's state to return to, under a mask.

Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020) and SWAMP (Choi et al.
2024) start every cycle from the same weights theta_T, the *ticket* (the initialisation, or the weights after
T steps of dense training), under the cycle's mask m_k: theta <- m_k * theta_T. :func:`take_ticket` copies
what that needs, :func:`rewind` goes back to it.

A :class:`Ticket` holds copies, never the live tensors, so training after it was taken does not change it and
one ticket rewinds any number of particles. It can also hold the optimizer's state (momentum, Adam's moments,
its step count) and the random number generators' states (torch on the CPU, every CUDA device when CUDA is
available, Python's ``random``, NumPy's global generator), taken only when asked: rewinding them as well
makes the run after a rewind draw the same batches, dropout and augmentation as the run after the ticket.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.pruning.masks import apply_masks

__all__ = ["RandomStates", "Ticket", "rewind", "take_ticket"]


@dataclass(frozen=True)
class RandomStates:
    """The global random number generators' states: torch's CPU generator, every CUDA device's (empty when
    CUDA is not available), Python's ``random`` and NumPy's legacy global generator (``np.random``).

    Example:
        >>> states = RandomStates.capture()
        >>> drawn = torch.rand(2), random.random(), np.random.rand()
        >>> states.restore()
        >>> torch.equal(torch.rand(2), drawn[0]), random.random() == drawn[1], np.random.rand() == drawn[2]
        (True, True, True)
    """

    torch: Tensor
    cuda: tuple[Tensor, ...]
    python: tuple[Any, ...]
    numpy: tuple[Any, ...]

    @classmethod
    def capture(cls) -> RandomStates:
        """The generators' states now (copies)."""
        cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else ()
        return cls(torch.get_rng_state(), cuda, random.getstate(), np.random.get_state())

    def restore(self) -> None:
        """Set the generators back to these states (CUDA's only where both the states and CUDA exist)."""
        torch.set_rng_state(self.torch)
        if self.cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(self.cuda))
        random.setstate(self.python)
        np.random.set_state(self.numpy)


@dataclass(frozen=True)
class Ticket:
    """What :func:`take_ticket` copied: the model's state dict (parameters and buffers, integer buffers such as
    BatchNorm's ``num_batches_tracked`` included, each on its device and in its dtype), and, if asked for,
    the optimizer's state dict and the :class:`RandomStates`.

    Example:
        >>> ticket = take_ticket(nn.BatchNorm1d(2))
        >>> sorted(ticket.state), ticket.state["num_batches_tracked"].dtype, ticket.optimizer, ticket.rng
        (['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight'], torch.int64, None, None)
    """

    state: dict[str, Tensor]
    optimizer: dict[str, Any] | None = None
    rng: RandomStates | None = None


def take_ticket(model: nn.Module, optimizer: torch.optim.Optimizer | None = None, rng: bool = False) -> Ticket:
    """A copy of ``model``'s weights and buffers (theta_T, the ticket; Frankle et al. 2020) to :func:`rewind` to.

    Args:
        model: the network at the point to return to (not modified).
        optimizer: also copy this optimizer's state (momentum buffers, Adam's moments and step, the groups'
            hyperparameters).
        rng: also copy the global random number generators' states (:class:`RandomStates`).

    Returns:
        A :class:`Ticket` of clones: later training of ``model`` or steps of ``optimizer`` leave it as it is.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> ticket = take_ticket(net)
        >>> _ = net.weight.data.fill_(5.0)  # training moves the weights ...
        >>> bool((ticket.state["weight"] == 5.0).any())  # ... not the ticket's
        False
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    return Ticket(state, saved, RandomStates.capture() if rng else None)


@torch.no_grad()
def rewind(model: nn.Module, ticket: Ticket, masks: Mapping[str, Tensor] | None = None,
           optimizer: torch.optim.Optimizer | None = None, rng: bool = False) -> nn.Module:
    """Load ``ticket`` into ``model`` under ``masks``: theta <- m * theta_T (Frankle & Carbin 2019), pruned weights
    exactly 0; with ``optimizer`` its state is the ticket's again, with ``rng`` the random generators' too.

    Args:
        model: the network the ticket was taken of (or one of the same architecture), modified in place.
        ticket: from :func:`take_ticket`; not modified, so it can rewind any number of particles.
        masks: name -> 0/1 mask of ``model``'s parameters (:mod:`core.pruning`), moved to the weights' devices.
        optimizer: an optimizer over ``model``'s parameters to load the ticket's optimizer state into (the
            ticket must hold one: ``take_ticket(model, optimizer)``).
        rng: also restore the global random generators (the ticket must hold them: ``take_ticket(..., rng=True)``).

    Returns:
        ``model``.

    Raises:
        ValueError: ``masks`` name a parameter ``model`` does not have, or the ticket holds no optimizer state
            (or random states) to restore.

    Example:
        >>> net = nn.Linear(2, 1, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[1.0, 2.0]]))
        >>> ticket = take_ticket(net)
        >>> _ = net.weight.data.fill_(7.0)  # training
        >>> rewind(net, ticket, {"weight": torch.tensor([[0.0, 1.0]])}).weight.tolist()
        [[0.0, 2.0]]
    """
    params = dict(model.named_parameters())
    unknown = [name for name in masks or {} if name not in params]
    if unknown:
        raise ValueError(f"the masks name parameters the model does not have: {', '.join(unknown[:4])}")
    if optimizer is not None and ticket.optimizer is None:
        raise ValueError("the ticket holds no optimizer state: take it with take_ticket(model, optimizer)")
    if rng and ticket.rng is None:
        raise ValueError("the ticket holds no random states: take it with take_ticket(model, rng=True)")
    model.load_state_dict(ticket.state)
    if masks is not None:
        apply_masks(model, {name: mask.to(params[name].device) for name, mask in masks.items()})
    if optimizer is not None:
        # Optimizer.load_state_dict keeps tensors that already have the parameter's dtype and device: a copy, so
        # that the optimizer's in-place updates never reach the ticket.
        optimizer.load_state_dict(copy.deepcopy(ticket.optimizer))
    if rng:
        ticket.rng.restore()
    return model
