"""The permutation symmetries of a network, read from its computation graph (``torch.fx``).

Reordering the hidden units of a layer -- the rows of its weight and bias, the matching entries of its
BatchNorm and the matching input columns of the next layer -- leaves the function unchanged
(Hecht-Nielsen 1990). Entezari et al. (2022) conjecture that SGD solutions are linearly connected once
these permutations are accounted for; Ainsworth et al. (2023, "Git Re-Basin") find them by weight or
activation matching (:mod:`landscape.matching`).

:func:`permutation_spec` derives the permutations from the model itself: it traces the model with
``torch.fx.symbolic_trace`` and follows the channel dimension (dim 1) of every tensor through the graph:

* a Linear or Conv layer starts a *group* (its output units: weight rows, bias) and reorders the input
  dimension of its weight (dim 1) by the group of its input;
* BatchNorm (weight, bias, running mean and variance), element-wise activations, dropout and pooling
  keep the group of their input;
* a flatten of C channels x S positions keeps the group in blocks of S (channel-major: the next Linear's
  input columns c S ... c S + S - 1 belong to channel c);
* tensors combined element-wise (``+``, ``-``, ``*``) must share one permutation: their groups merge
  (union-find), as the blocks of a residual stream do;
* the input and the output are never permuted: a group that reaches either is fixed.

Anything else that touches a permuted tensor (``torch.cat``, a reshape, indexing, attention, ...) is
refused with an :class:`landscape.batches.ArgumentError` (a ValueError) naming the node and the operation,
unless what it touches is fixed anyway (a softmax after the output layer is fine). A model with weight
matrices that no group permutes (a recurrent layer or an embedding, which the walk does not follow) or
with a tensor shared by several layers (tied weights) is refused too: aligning it would silently leave
those weights unaligned, or permute one tensor two ways.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from landscape.batches import ArgumentError

FIXED = 0  # the union-find element of everything that is never permuted: the input and the output

_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                       nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus)
_KEEP_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_ACTIVATION_CALLS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardtanh,
                     F.hardswish, F.hardsigmoid, F.softplus, torch.relu, torch.sigmoid, torch.tanh,
                     "relu", "relu_", "sigmoid", "tanh"}
_KEEP_CALLS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, "clone", "contiguous", "detach"}
_POOL_CALLS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
               F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
               F.adaptive_max_pool2d, F.adaptive_max_pool3d}
_ELEMENTWISE_CALLS = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
                      operator.truediv, torch.add, torch.sub, torch.mul, "add", "add_", "sub", "sub_", "mul",
                      "mul_", "div"}
_SHAPE_CALLS = {"size", "dim"}
_SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device"}


@dataclass(frozen=True)
class Axis:
    """One dimension of one ``state_dict`` tensor that a permutation reorders: unit c owns the entries
    c * block ... c * block + block - 1 along ``dim`` (block > 1 after a flatten)."""

    key: str
    dim: int
    block: int = 1


@dataclass(frozen=True)
class Group:
    """Hidden units that one permutation reorders: ``size`` units, the tensor ``axes`` they index and the
    graph nodes whose dim 1 they are (``activations``: after a nonlinearity where there is one)."""

    name: str
    size: int
    axes: tuple[Axis, ...]
    activations: tuple[str, ...]


@dataclass(frozen=True)
class PermutationSpec:
    """Every permutation symmetry :func:`permutation_spec` found, one :class:`Group` each."""

    groups: tuple[Group, ...]

    def identity(self) -> dict[str, Tensor]:
        """The identity permutation of every group."""
        return {g.name: torch.arange(g.size) for g in self.groups}

    @functools.cached_property
    def axes(self) -> dict[str, tuple[tuple[str, Axis], ...]]:
        """``state_dict`` key -> the ``(group name, axis)`` pairs that reorder that tensor."""
        out: dict[str, list[tuple[str, Axis]]] = {}
        for group in self.groups:
            for axis in group.axes:
                out.setdefault(axis.key, []).append((group.name, axis))
        return {k: tuple(v) for k, v in out.items()}

    def permute(self, key: str, tensor: Tensor, permutations: Mapping[str, Sequence[int] | Tensor],
                skip: Axis | None = None) -> Tensor:
        """``tensor`` (entry ``key`` of a state_dict) with the units of every axis but ``skip`` reordered:
        unit i of the result is unit ``permutations[g][i]`` of ``tensor``."""
        for name, axis in self.axes.get(key, ()):
            if axis != skip:
                tensor = permute_axis(tensor, axis, torch.as_tensor(permutations[name], dtype=torch.long))
        return tensor


@dataclass(frozen=True)
class _Label:
    """A tensor whose dim 1 is ordered by union-find element ``element``; ``layout`` is ``channels``
    (N, C, spatial...), ``features`` (N, C) or ``flat`` (N, C S after a flatten)."""

    element: int
    layout: str | None


@dataclass(frozen=True)
class _Opaque:
    """The result of an operation alignment does not follow; it depends on these elements."""

    elements: frozenset[int]


class _Propagation:
    """Union-find over groups of units while walking the graph once in topological order."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.parent, self.size, self.names = [FIXED], [0], ["(fixed)"]
        self.axes: list[set[Axis]] = [set()]
        self.nodes: list[list[tuple[str, bool]]] = [[]]
        self.refusals: list[tuple[str, frozenset[int]]] = []
        self.modules_seen: set[str] = set()

    def find(self, e: int) -> int:
        while self.parent[e] != e:
            self.parent[e] = e = self.parent[self.parent[e]]
        return e

    def new(self, name: str, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.names.append(name)
        self.axes.append(set())
        self.nodes.append([])
        return len(self.parent) - 1

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            if b == FIXED or (a != FIXED and b < a):
                a, b = b, a
            self.parent[b] = a
        return a

    def fixed(self, label: _Label | _Opaque | None) -> bool:
        if isinstance(label, _Opaque):
            return all(self.find(e) == FIXED for e in label.elements)
        return label is None or self.find(label.element) == FIXED

    def refuse(self, node: torch.fx.Node, reason: str, labels: Iterable[_Label | _Opaque | None]) -> _Opaque:
        """Defer an error: it stands unless every element ``labels`` depend on ends up fixed."""
        elements = frozenset(e for label in labels for e in _elements(label))
        self.refusals.append((f"cannot align: node '{node.name}' {reason}", elements))
        return _Opaque(elements)

    def attach(self, label: _Label, axes: Iterable[Axis]) -> None:
        self.axes[label.element].update(axes)


def _elements(label: _Label | _Opaque | None) -> frozenset[int]:
    if isinstance(label, _Opaque):
        return label.elements
    return frozenset() if label is None else frozenset({label.element})


def _describe(node: torch.fx.Node, model: nn.Module) -> str:
    if node.op == "call_module":
        return f"module '{node.target}' ({type(model.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        return f"the tensor method .{node.target}()"
    fn = node.target
    module = getattr(fn, "__module__", None) or ""
    return f"{module.lstrip('_')}.{getattr(fn, '__name__', fn)}" if module else repr(fn)


def _flatten_dims(node: torch.fx.Node) -> tuple[int, int]:
    """``start_dim``, ``end_dim`` of ``torch.flatten(x, ...)`` or ``x.flatten(...)``."""
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start, end


def _layer(p: _Propagation, node: torch.fx.Node, module: nn.Module, x: _Label | _Opaque | None) -> _Label:
    """A Linear or Conv layer: a new group for its outputs; its input dimension follows ``x``'s group."""
    name, is_linear = str(node.target), isinstance(module, nn.Linear)
    out = _Label(p.new(name, module.out_features if is_linear else module.out_channels),
                 "features" if is_linear else "channels")
    p.attach(out, [Axis(f"{name}.{k}", 0) for k, _ in module.named_parameters(recurse=False)])
    p.nodes[out.element].append((node.name, False))
    if p.fixed(x):
        return out
    width = module.weight.shape[1]
    group = p.size[p.find(x.element)] if isinstance(x, _Label) else 0
    if not is_linear and module.groups != 1:
        p.refuse(node, f"calls {_describe(node, p.model)} with groups={module.groups}, which alignment does not "
                 "support", [x])
    elif name in p.modules_seen:
        p.refuse(node, f"calls {_describe(node, p.model)} a second time (shared weights), which alignment does "
                 "not support", [x])
    elif isinstance(x, _Opaque):
        p.refuse(node, f"feeds the result of an unsupported operation to {_describe(node, p.model)}", [x])
    elif is_linear and x.layout == "channels":
        p.refuse(node, f"applies Linear '{name}' to a tensor with spatial dimensions, which alignment does not "
                 "support (flatten it first)", [x])
    elif not is_linear and x.layout != "channels":
        p.refuse(node, f"applies {_describe(node, p.model)} to a tensor without spatial dimensions", [x])
    elif width % group or (x.layout == "features" and width != group):
        p.refuse(node, f"feeds {group} units to '{name}', whose input width {width} does not match", [x])
    else:
        p.attach(x, [Axis(f"{name}.weight", 1, width // group)])
    p.modules_seen.add(name)
    return out


def _keep(p: _Propagation, node: torch.fx.Node, x: _Label, activation: bool) -> _Label:
    """The result has ``x``'s units in ``x``'s order."""
    p.nodes[x.element].append((node.name, activation))
    return x


def _shape_query(node: torch.fx.Node) -> bool:
    return (node.op == "call_method" and node.target in _SHAPE_CALLS) or (
        node.target is getattr and len(node.args) == 2 and node.args[1] in _SHAPE_ATTRIBUTES)


def _step(p: _Propagation, node: torch.fx.Node, labels: dict[torch.fx.Node, _Label | _Opaque | None]):
    """The label of ``node``'s result from its inputs' labels."""
    inputs = [labels[n] for n in node.all_input_nodes]
    module = p.model.get_submodule(node.target) if node.op == "call_module" else None
    x = labels[node.args[0]] if node.args and isinstance(node.args[0], torch.fx.Node) else None
    if isinstance(module, nn.Linear | nn.modules.conv._ConvNd) and not isinstance(
            module, nn.modules.conv._ConvTransposeNd):
        return _layer(p, node, module, x)
    if all(p.fixed(label) for label in inputs):
        return _Label(FIXED, None)
    if _shape_query(node):
        return None
    what = node.target if module is None else None
    if what in _ELEMENTWISE_CALLS:
        return _combine(p, node, inputs)
    unsupported = f"calls {_describe(node, p.model)}, which alignment does not support"
    if not isinstance(x, _Label) or not all(p.fixed(labels[n]) for n in node.all_input_nodes if n is not node.args[0]):
        return p.refuse(node, unsupported, inputs)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and x.layout != "flat":
        if str(node.target) in p.modules_seen:
            return p.refuse(node, f"calls {_describe(node, p.model)} a second time (shared weights), which "
                            "alignment does not support", inputs)
        p.modules_seen.add(str(node.target))
        p.attach(x, [Axis(f"{node.target}.{k}", 0) for k, v in module.state_dict().items() if v.dim() == 1])
        return _keep(p, node, x, False)
    if isinstance(module, _ACTIVATION_MODULES) or what in _ACTIVATION_CALLS:
        return _keep(p, node, x, x.layout != "flat")
    if isinstance(module, _KEEP_MODULES) or what in _KEEP_CALLS:
        return _keep(p, node, x, False)
    if (isinstance(module, _POOL_MODULES) or what in _POOL_CALLS) and x.layout == "channels":
        return _keep(p, node, x, False)
    if isinstance(module, nn.Flatten) or what in (torch.flatten, "flatten"):
        start, end = (module.start_dim, module.end_dim) if module is not None else _flatten_dims(node)
        if end == -1 and start == 1:
            return _Label(x.element, "flat" if x.layout == "channels" else x.layout)
        if end == -1 and start >= 2 and x.layout == "channels":
            return x
    return p.refuse(node, unsupported, inputs)


def _combine(p: _Propagation, node: torch.fx.Node, inputs: Sequence[_Label | _Opaque | None]):
    """Element-wise ``a + b`` (or -, *): every permuted operand shares one permutation."""
    tensors = [label for label in inputs if label is not None]
    permuted = [label for label in tensors if not p.fixed(label)]
    if any(isinstance(label, _Opaque) for label in tensors):
        return p.refuse(node, "combines the result of an unsupported operation with another tensor", inputs)
    layouts = {label.layout for label in permuted}
    sizes = {p.size[p.find(label.element)] for label in permuted}
    if len(layouts) > 1 or len(sizes) > 1:
        return p.refuse(node, f"calls {_describe(node, p.model)} on tensors of different shapes "
                        f"({', '.join(sorted(map(str, sizes)))} units), which alignment does not support", inputs)
    root = permuted[0].element
    for label in tensors:
        root = p.union(root, label.element)
    return _keep(p, node, _Label(root, permuted[0].layout), False)


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation symmetries of ``model``'s hidden units, from its ``torch.fx`` graph.

    Group g reorders its units by a permutation P_g: a layer with output group g and input group h maps
    W -> P_g W P_h^T (P_h in blocks of S after a flatten of S positions), its bias b -> P_g b, and a
    BatchNorm on group g permutes its weight, bias and running statistics; the function is unchanged
    (Hecht-Nielsen 1990; Ainsworth et al. 2023). See the module docstring for the rules.

    Args:
        model: any module ``torch.fx.symbolic_trace`` can trace (no data-dependent control flow); not
            modified.

    Returns:
        :class:`PermutationSpec`, one group per free permutation, named after the first layer producing it.

    Raises:
        ArgumentError: (a ValueError) when the graph cannot be traced or holds an operation alignment does
            not follow on a permuted tensor; the message names the node and the operation.

    Example:
        >>> from torch import nn
        >>> spec = permutation_spec(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
        >>> [(g.name, g.size) for g in spec.groups], [a.key for a in spec.groups[0].axes]
        ([('0', 8)], ['0.bias', '0.weight', '2.weight'])
    """
    _refuse_tied(model)
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # tracing runs the model's own Python code, which may raise anything
        message = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ArgumentError(f"cannot align: torch.fx cannot trace {type(model).__name__} ({message})") from None
    p = _Propagation(model)
    labels: dict[torch.fx.Node, _Label | _Opaque | None] = {}
    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            labels[node] = _Label(FIXED, None)
        elif node.op == "output":
            for e in (e for n in node.all_input_nodes for e in _elements(labels[n])):
                p.union(e, FIXED)
        else:
            labels[node] = _step(p, node, labels)
    for message, elements in p.refusals:
        if any(p.find(e) != FIXED for e in elements):
            raise ArgumentError(message)
    spec = _spec(p)
    _refuse_unpermuted(model, spec)
    return spec


def _refuse_tied(model: nn.Module) -> None:
    """Refuse a model with a tensor shared by several layers: one permutation per use would permute it twice."""
    first: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(param), name) != name:
            raise ArgumentError(f"cannot align: '{first[id(param)]}' and '{name}' are one shared tensor (tied "
                                "weights), which alignment does not support")


def _refuse_unpermuted(model: nn.Module, spec: PermutationSpec) -> None:
    """Refuse a model with weight matrices that no group permutes (a recurrent layer, an embedding, ...):
    aligning it would leave them as they are and report a barrier of networks never aligned there."""
    outside = {name: p for name, p in model.named_parameters() if p.dim() >= 2 and name not in spec.axes}
    if outside:
        name = next(iter(outside))
        owner = model.get_submodule(name.rpartition(".")[0])
        total = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
        share = f"{sum(p.numel() for p in outside.values()):,} of {total:,} weights"
        what = "no group of hidden units" if not spec.groups else f"weight matrices outside every group ({share})"
        raise ArgumentError(f"cannot align: {type(model).__name__} has {what}, e.g. '{name}' of "
                            f"{type(owner).__name__}, which alignment does not follow; aligning would leave "
                            f"{'them' if spec.groups else 'every weight'} as {'they are' if spec.groups else 'it is'}")


def _spec(p: _Propagation) -> PermutationSpec:
    roots: dict[int, list[int]] = {}
    for e in range(1, len(p.parent)):
        if p.find(e) != FIXED:
            roots.setdefault(p.find(e), []).append(e)
    groups = []
    for members in roots.values():
        axes = sorted(set().union(*(p.axes[e] for e in members)), key=lambda a: (a.key, a.dim))
        nodes = [n for e in members for n in p.nodes[e]]
        chosen = [name for name, activation in nodes if activation] or [name for name, _ in nodes]
        groups.append(Group(p.names[members[0]], p.size[members[0]], tuple(axes), tuple(chosen)))
    return PermutationSpec(tuple(groups))


def permute_state(state: Mapping[str, Tensor], spec: PermutationSpec,
                  permutations: Mapping[str, Sequence[int] | Tensor]) -> dict[str, Tensor]:
    """``state`` (a state_dict, or masks keyed like it) with every group's units reordered: unit i of the
    result is unit ``permutations[g][i]`` of ``state``. Keys no group touches are kept as they are.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> spec = permutation_spec(net)
        >>> out = permute_state(net.state_dict(), spec, {"0": [2, 0, 1]})
        >>> bool((out["0.bias"] == net[0].bias[[2, 0, 1]]).all())
        True
    """
    return {key: spec.permute(key, tensor, permutations) for key, tensor in state.items()}


def permute_axis(tensor: Tensor, axis: Axis, perm: Tensor) -> Tensor:
    """``tensor`` with the units of ``axis`` (blocks of ``axis.block`` entries) in the order ``perm``."""
    index = (perm[:, None] * axis.block + torch.arange(axis.block)).reshape(-1)
    return tensor.index_select(axis.dim, index.to(tensor.device))
