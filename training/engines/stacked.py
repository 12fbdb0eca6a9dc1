"""N particles of one architecture as one module, for training them in one batched computation.

:class:`StackedModule` holds every parameter and buffer of the architecture with a leading particle
dimension, under the architecture's own ``state_dict`` names, and evaluates all particles at once with
``torch.func.vmap`` over ``torch.func.functional_call`` (the model-ensembling recipe of the torch.func
documentation). Its input is ``(N, B, ...)``: particle n sees only slice n, and its BatchNorm layers
use and update only their own slice of the running statistics.

Why the unmodified training loop trains it correctly (:func:`training.train.train_particle`):

* the loss is the mean over all N*B logits, (1/N) sum_n L_n, so d/d(theta_n) is (1/N) grad L_n; the
  forward pass scales the gradient flowing back into the logits by N, which makes it grad L_n;
* SGD with momentum and weight decay, gradient masking and SWA's running mean are elementwise, so on
  stacked tensors they are the per-particle updates side by side (all particles share the schedule);
* ``state_dict`` keys equal the architecture's, so stacked states, masks and resume states are the
  per-particle ones stacked along dimension 0 (:func:`stack_states`, :func:`unstack_state`).

With one particle the forward pass calls the architecture directly on slice 0 (no vmap), which gives
the same numbers as training the plain model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

State = dict[str, Tensor]


def stack_states(states: Sequence[Mapping[str, Tensor]]) -> State:
    """``{key: stack([s[key] for s in states])}`` over the keys of the first state."""
    return {key: torch.stack([s[key] for s in states]) for key in states[0]}


def unstack_state(stacked: Mapping[str, Tensor], index: int) -> State:
    """Particle ``index``'s own (cloned) tensors of a stacked state."""
    return {key: value[index].detach().clone() for key, value in stacked.items()}


class StackedModule(nn.Module):
    """``len(states)`` copies of ``architecture``, each with its own state, evaluated as one batch."""

    def __init__(self, architecture: nn.Module, states: Sequence[Mapping[str, Tensor]]):
        super().__init__()
        self.particles = len(states)
        # Only the code of the architecture is used; keeping it off the module tree hides its own
        # (meta, storage-free) tensors from parameters(), state_dict() and BN recalibration.
        object.__setattr__(self, "_architecture", copy.deepcopy(architecture).to("meta"))
        # A tensor shared by several layers (tied weights) is one stacked parameter under each of its names,
        # as in the architecture: named_parameters() lists it once, state_dict() under every name.
        first_name = {id(p): name for name, p in architecture.named_parameters()}
        aliases = {name: first_name[id(p)] for name, p in architecture.named_parameters(remove_duplicate=False)}
        object.__setattr__(self, "_aliases", {k: v for k, v in aliases.items() if k != v})
        stacked: dict[str, nn.Parameter] = {}
        for key, value in stack_states(states).items():
            owner, leaf = self._owner(key)
            if key in aliases:
                if aliases[key] not in stacked:
                    stacked[aliases[key]] = nn.Parameter(value.detach().clone())
                owner.register_parameter(leaf, stacked[aliases[key]])
            else:
                owner.register_buffer(leaf, value.detach().clone())

    def _owner(self, key: str) -> tuple[nn.Module, str]:
        """The holder module of ``key`` (created on first use), mirroring the architecture's nesting."""
        *path, leaf = key.split(".")
        owner: nn.Module = self
        for part in path:
            if part not in owner._modules:
                owner.add_module(part, nn.Module())
            owner = owner._modules[part]
        return owner, leaf

    def train(self, mode: bool = True) -> StackedModule:
        self._architecture.train(mode)
        return super().train(mode)

    def _one(self, params: State, buffers: State, x: Tensor) -> Tensor:
        return functional_call(self._architecture, (params, buffers), (x,))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N * B, classes)`` of inputs ``(N, B, ...)``, particle-major."""
        params, buffers = dict(self.named_parameters()), dict(self.named_buffers())
        params.update({alias: params[name] for alias, name in self._aliases.items()})
        if self.particles == 1:
            out = self._one({k: v[0] for k, v in params.items()}, {k: v[0] for k, v in buffers.items()},
                            x[0])[None]
        else:
            out = vmap(self._one)(params, buffers, x)
            if out.requires_grad:
                n = self.particles
                out.register_hook(lambda grad: grad * n)
        return out.flatten(0, 1)
