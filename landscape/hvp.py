"""Hessian-vector products of the mean training loss, amortised over many probes.

The operator is the Hessian of the mean loss over N samples (cross-entropy unless a ``loss_fn`` is
given; see :mod:`landscape.batches` for the convention),

    H = (1/N) sum_i nabla^2_theta l(f_theta(x_i), y_i) = sum_b nabla^2_theta L_b,   L_b = (1/N) sum_{i in b} l_i,

with the model in eval mode, so that BatchNorm uses its running statistics and the loss is a sum
over samples (each batch's Hessian simply adds up). Every product is the double-backward
(Pearlmutter 1994) ``d/dtheta <nabla L_b, v>``.

Amortisation: PyHessian (Yao et al. 2020) runs forward, gradient-with-graph and double backward for
every probe and every batch. Here each batch pays one forward and one ``create_graph`` gradient, and
all probes then reuse that graph (``retain_graph``). Measured on CPU for a 1-D CNN with BatchNorm, a
Python loop over probes on the shared graph beat both forward-over-reverse
(``torch.func.jvp`` of ``torch.func.grad``) and probes batched by ``vmap``/``is_grads_batched``,
which pay for larger intermediates; so the loop is what is kept.

Layers: :func:`double_backward_friendly` rewrites eval-mode BatchNorm as the affine map it is,
folded into the preceding convolution where there is one; the function and its derivatives are
unchanged, the products cheaper. Operations that PyTorch cannot differentiate twice are computed, while
products run, in equivalent forms that it can (:func:`twice_differentiable`: attention by its math kernel,
``hardsigmoid`` as ``relu6(x + 3) / 6``, the operations of its own kernel); a model using any other such
operation is refused with one line naming it (:func:`no_second_derivative`).

Sparse networks: a :class:`Subspace` keeps only the unpruned coordinates, so the operator acts on
R^d, d = number of kept coordinates, as P^T H P (P the embedding of the kept coordinates);
its trace is the trace of H's principal submatrix on those coordinates.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from core.averaging import apply_model
from core.progress import tqdm
from landscape.batches import (
    ArgumentError,
    LossFn,
    check_finite,
    cross_entropy_sum,
    mean_loss_terms,
    model_applied_to,
)

Matmat = Callable[[Tensor], Tensor]
Batch = tuple[Tensor, Tensor]


def _hardsigmoid(x: Tensor, inplace: bool = False) -> Tensor:
    """hardsigmoid(x) = min(max(x + 3, 0), 6) / 6, the operations (and so the numbers) of PyTorch's kernel, whose
    backward has no derivative of its own; relu6's has."""
    return nn.functional.relu6(x + 3.0) / 6.0


class _TwiceDifferentiableForms(TorchFunctionMode):
    """Calls of functions without a double backward replaced by equal functions with one (this thread only)."""

    FORMS: dict[Callable, Callable] = {nn.functional.hardsigmoid: _hardsigmoid}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.FORMS.get(func, func)(*args, **(kwargs or {}))


@contextlib.contextmanager
def twice_differentiable() -> Iterator[None]:
    """Inside, ``scaled_dot_product_attention`` runs its math kernel (the fused ones have no double backward)
    and ``hardsigmoid`` (``nn.Hardsigmoid``, torchvision's MobileNetV3 squeeze-excitation) is
    ``relu6(x + 3) / 6``: the same values, and derivatives of every order. Hardswish, SiLU, Mish, GELU,
    ReLU6 and timm's activations have a double backward already (checked for torch 2.14). Every torch call
    inside passes through a Python function (``TorchFunctionMode``), so it wraps forward passes only: around
    a whole product it made one of a small MLP 2.4x slower."""
    with sdpa_kernel([SDPBackend.MATH]), _TwiceDifferentiableForms():
        yield


def no_second_derivative(err: RuntimeError) -> ArgumentError | None:
    """The one-line :class:`ArgumentError` for autograd's ``derivative for aten::OP_backward is not implemented``
    (an operation of the model or loss without a double backward), None for any other error."""
    found = re.search(r"derivative for (\S+) is not implemented", str(err))
    if found is None:
        return None
    op = found.group(1).removesuffix("_backward")
    return ArgumentError(f"model or loss_fn: PyTorch has no second derivative of {op}, which one of them calls, so "
                         "the Hessian cannot be computed; write that step in a twice-differentiable form")


def _eval_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None


def _batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """(s, t) with eval-mode BatchNorm(x) = x * s + t per channel: s = w / sqrt(var + eps), t = b - mean * s."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    return scale, shift if bn.bias is None else shift + bn.bias


class AffineBatchNorm(nn.Module):
    """Eval-mode BatchNorm as the affine map ``x * s + t`` it is."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = _batchnorm_affine(self.bn)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.reshape(shape) + shift.reshape(shape)


class ConvBatchNorm(nn.Module):
    """A convolution followed by eval-mode BatchNorm as one convolution with weight W * s and bias
    b * s + t, computed from the original parameters at every call (so derivatives reach them)."""

    def __init__(self, conv: nn.modules.conv._ConvNd, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = _batchnorm_affine(self.bn)
        weight = self.conv.weight * scale.reshape(-1, *([1] * (self.conv.weight.dim() - 1)))
        bias = shift if self.conv.bias is None else self.conv.bias * scale + shift
        return self.conv._conv_forward(x, weight, bias)


def _conv_output_sizes(model: nn.Module, example: Any) -> tuple[dict[str, int], Any]:
    """Number of output elements of every convolution of ``model`` on the batch ``example``, and its outputs."""
    sizes: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: sizes.__setitem__(name, out.numel()))
             for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    try:
        with torch.no_grad():
            outputs = apply_model(model, example)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes, outputs


def _same_outputs(first: Any, second: Any) -> bool:
    """Whether two outputs of a model agree: the same structure, tensors equal up to kernel rounding."""
    (a, a_spec), (b, b_spec) = tree_flatten(first), tree_flatten(second)
    if a_spec != b_spec:
        return False
    try:
        return all(torch.allclose(x, y, rtol=1e-4, atol=1e-6) if isinstance(x, Tensor) and isinstance(y, Tensor)
                   else bool(x == y) for x, y in zip(a, b, strict=True))
    except (RuntimeError, TypeError, ValueError):  # leaves that cannot be compared: take them as different
        return False


def _conv_then_batchnorm(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """Whether ``node`` calls an eval-mode BatchNorm on the output of a convolution that nothing else uses."""
    if node.op != "call_module" or not _eval_batchnorm(modules[node.target]) or len(node.args) != 1:
        return False
    prev = node.args[0]
    return (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1
            and type(modules[prev.target]) in (nn.Conv1d, nn.Conv2d, nn.Conv3d))


def _fuse_conv_batchnorm(model: nn.Module, example: Any = None) -> nn.Module:
    """``model`` with every convolution that only feeds an eval-mode BatchNorm fused with it (torch.fx);
    returned as it is when there is nothing to fuse, torch.fx cannot trace it, or its traced graph does not
    run on ``example`` or gives other outputs there (a graph fixes ``is None`` branches at trace time).

    With an ``example`` batch, only convolutions whose output on it is at least as large as their
    weight are fused: folding costs a few weight-sized products in each derivative, the affine map
    that replaces an unfused BatchNorm a few output-sized ones. Measured on one CPU thread, folding
    made a Hessian-vector product of MNIST-1D's ``cnn1d`` (long sequences, small kernels; all its
    convolutions qualify from batch 39 up) about 0.7x as expensive, but one of a torchvision ResNet-18
    on 32x32 images (batch 32: 1x1 to 8x8 maps under convolutions of up to 2.4M weights) 1.4-1.8x.
    """
    try:
        graph_module = fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow and the like: fusion is only an optimisation
        return model
    modules = dict(graph_module.named_modules())
    pairs = [(node, node.args[0]) for node in graph_module.graph.nodes if _conv_then_batchnorm(node, modules)]
    if not pairs:  # the model itself then: its traced graph fixes branches (``if mask is not None``) at trace time
        return model
    if example is not None:
        # a traced graph fixes branches such as ``if mask is not None`` at trace time: it is used only where it
        # runs on the batch and gives the model's outputs (fusion is only an optimisation)
        try:
            sizes, outputs = _conv_output_sizes(graph_module, example)
        except Exception:
            return model
        with torch.no_grad():
            if not _same_outputs(outputs, apply_model(model, example)):
                return model
    else:
        sizes = {}
    for node, prev in pairs:
        if sizes.get(prev.target, math.inf) < modules[prev.target].weight.numel():
            continue
        name = f"fused_{prev.target.replace('.', '_')}"
        graph_module.add_submodule(name, ConvBatchNorm(modules[prev.target], modules[node.target]))
        with graph_module.graph.inserting_after(node):
            fused = graph_module.graph.call_module(name, prev.args, prev.kwargs)
        node.replace_all_uses_with(fused)
        graph_module.graph.erase_node(node)
        graph_module.graph.erase_node(prev)
    graph_module.recompile()
    return graph_module


def double_backward_friendly(model: nn.Module, example: Any = None) -> tuple[nn.Module, dict[str, Tensor]]:
    """An eval-mode copy of ``model`` computing the same function of the same parameters, with layers
    rewritten into forms whose second derivatives are cheaper, and its trainable parameters under
    their names in ``model``.

    Eval-mode BatchNorm is the affine map ``x * s + t``: after a convolution it is folded into the
    convolution's weight and bias (which avoids all activation-sized BatchNorm work), unless the
    convolution's output on the batch ``example`` is smaller than its weight (see
    :func:`_fuse_conv_batchnorm`); elsewhere it becomes that affine map, which avoids the generic
    training-mode BatchNorm double-backward formula.
    Measured on one CPU thread for the MNIST-1D ``cnn1d`` (batch 256), a Hessian-vector product on the
    rewritten copy costs about 0.7x of one on the original model, and 0.45-0.5x of the forward +
    gradient + product that PyHessian pays per probe and batch.
    """
    net = copy.deepcopy(model).eval()
    params = trainable_parameters(net)
    net = _fuse_conv_batchnorm(net, example)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if _eval_batchnorm(child) and not isinstance(parent, ConvBatchNorm | AffineBatchNorm):
                setattr(parent, name, AffineBatchNorm(child))
    return net, params


@dataclass(frozen=True)
class Subspace:
    """The coordinates of the flattened parameters that the Hessian is restricted to.

    ``kept[i]`` holds the flat indices kept in parameter ``names[i]`` (None: all of them). Vectors of
    the subspace are rows of length :attr:`dim`, parameter after parameter in ``names`` order.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    kept: tuple[Tensor | None, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(shape.numel() if idx is None else idx.numel()
                     for shape, idx in zip(self.shapes, self.kept, strict=True))

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    @property
    def layers(self) -> dict[str, slice]:
        """Each parameter's slice of a subspace vector."""
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes, strict=True):
            out[name] = slice(start, start + size)
            start += size
        return out

    def scatter(self, vectors: Tensor) -> list[Tensor]:
        """Rows (m, dim) as per-parameter tensors (m, *shape), zero outside the subspace."""
        parts = torch.split(vectors, self.sizes, dim=1)
        out = []
        for part, shape, idx in zip(parts, self.shapes, self.kept, strict=True):
            if idx is not None:
                full = part.new_zeros(part.shape[0], shape.numel())
                part = full.index_copy_(1, idx, part)
            out.append(part.reshape(part.shape[0], *shape))
        return out

    def gather(self, tensors: Sequence[Tensor]) -> Tensor:
        """Per-parameter tensors (m, *shape) as rows (m, dim) of subspace coordinates."""
        flat = []
        for tensor, idx in zip(tensors, self.kept, strict=True):
            tensor = tensor.reshape(tensor.shape[0], -1)
            flat.append(tensor if idx is None else tensor.index_select(1, idx))
        return torch.cat(flat, dim=1)


def make_subspace(params: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Subspace:
    """The subspace of the unpruned coordinates (``masks[name] != 0``); all coordinates if no masks.

    Parameters without a mask (biases, BatchNorm) are kept whole.
    """
    masks = masks or {}
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"masks for parameters the model lacks: {', '.join(unknown)}")
    kept = []
    for name, p in params.items():
        mask = masks.get(name)
        if mask is not None and mask.shape != p.shape:
            raise ValueError(f"mask of {name} has shape {tuple(mask.shape)}, the weight {tuple(p.shape)}")
        kept.append(None if mask is None else torch.nonzero(mask.reshape(-1).to(p.device) != 0).flatten())
    return Subspace(tuple(params), tuple(p.shape for p in params.values()), tuple(kept))


def trainable_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The parameters the Hessian is taken over: those that require gradients (as in PyHessian)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def hessian_matmat(model: nn.Module, batches: Sequence[Batch], subspace: Subspace | None = None,
                   progress: bool = False, loss_fn: LossFn | None = None) -> Matmat:
    """``V -> V H`` for rows V (m, d) of the subspace, H the Hessian of the mean loss over ``batches``.

    ``batches`` hold all N samples. Without ``loss_fn`` the loss is the cross-entropy summed over each
    batch and divided by N; a ``loss_fn`` returns the mean over its batch of n_b samples and is
    weighted n_b / N (:func:`landscape.batches.mean_loss_terms`), so either way H is that of the mean
    over all samples, whatever the batch sizes. The model is used through
    :func:`double_backward_friendly` (an eval-mode copy), so the caller's module is not touched.
    """
    net, params = double_backward_friendly(model, batches[0][0] if len(batches) else None)
    space = subspace or make_subspace(params)
    if space.names != tuple(params):
        raise ValueError("the subspace does not describe this model's trainable parameters")
    plist = list(params.values())
    total = sum(len(y) for _, y in batches)

    def matmat(vectors: Tensor) -> Tensor:
        try:
            return _matmat(vectors)
        except RuntimeError as err:
            refusal = no_second_derivative(err)
            if refusal is None:
                raise
            raise refusal from None

    def _matmat(vectors: Tensor) -> Tensor:
        probes = space.scatter(vectors)
        out = [torch.zeros_like(p) for p in probes]
        losses = []  # checked once per product: the curvature at a point of infinite loss is no number
        for x, y in tqdm(batches, desc="Hessian products", leave=False, disable=not progress):
            with twice_differentiable(), model_applied_to(x):  # the forward only: it chooses the derivatives
                outputs = apply_model(net, x)
                if loss_fn is None:
                    loss = cross_entropy_sum(outputs, y, float32=False) / total
                else:
                    loss = mean_loss_terms(outputs, y, loss_fn) / total
            losses.append(loss.detach())
            grads = torch.autograd.grad(loss, plist, create_graph=True, allow_unused=True)
            # gradients that are constant in theta (or absent) contribute zero rows of H
            live = [j for j, g in enumerate(grads) if g is not None and g.requires_grad]
            for i in range(vectors.shape[0] if live else 0):
                hv = torch.autograd.grad([grads[j] for j in live], plist, [probes[j][i] for j in live],
                                         retain_graph=True, allow_unused=True)
                for acc, h in zip(out, hv, strict=True):
                    if h is not None:
                        acc[i] += h
            del grads
        if losses:
            check_finite(float(torch.stack(losses).sum()), "the loss the Hessian is taken of")
        return space.gather(out)

    return matmat
