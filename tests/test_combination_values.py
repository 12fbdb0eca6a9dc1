"""The numbers of weight combinations (landscape.combination) on tiny explicit models: a point of the line is
theta_a + c (theta_b - theta_a) exactly, a one-hot point is that model bit for bit, hull weights must sum to 1,
masks multiply, BatchNorm is recomputed at each point as recalibrate_batchnorm does on the combined model, the
mean loss weighs samples, and bad arguments are refused with messages that name them. The caller's models are
never changed. Every test runs in well under a second."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from core.averaging import recalibrate_batchnorm
from core.evaluate import Evaluation
from landscape.batches import ArgumentError
from landscape.combination import (
    Combination,
    check_masks,
    even_batches,
    is_class_logits,
    mean_loss,
    model_device,
)

F32 = torch.float32


def linear(weight, bias) -> nn.Linear:
    net = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        net.weight.copy_(torch.tensor(weight, dtype=F32))
        net.bias.copy_(torch.tensor(bias, dtype=F32))
    return net


def bn_net(weight, bias, gamma, beta) -> nn.Sequential:
    net = nn.Sequential(linear(weight, bias), nn.BatchNorm1d(2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor(gamma, dtype=F32))
        net[1].bias.copy_(torch.tensor(beta, dtype=F32))
    return net


A = linear([[1.0, 2.0], [3.0, -1.0]], [0.5, -0.5])
B = linear([[3.0, -2.0], [1.0, 1.0]], [1.5, 0.5])
C = linear([[0.0, 0.0], [4.0, 4.0]], [-1.0, 2.0])
X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]])
Y = torch.tensor([0, 1, 1, 0])


def states(*nets):
    return [n.state_dict() for n in nets]


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def ce(net, x, y) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(net(x).double(), y, reduction="sum")) / len(y)


# --- the combined state ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [0.25, 0.5, 0.75, -0.5, 1.5, 0.3])
def test_a_point_of_the_line_is_a_plus_c_times_b_minus_a_exactly(c):
    line = Combination(A, states(A, B))
    point = line.state((1.0 - c, c))
    assert point.keys() == {"weight", "bias"}
    for key in point:
        a, b = A.state_dict()[key], B.state_dict()[key]
        assert torch.equal(point[key], a + (b - a) * torch.tensor(c, dtype=F32)), key
        assert point[key].dtype == F32 and point[key].shape == a.shape
    assert torch.equal(line.state((0.75, 0.25))["weight"], torch.tensor([[1.5, 1.0], [2.5, -0.5]]))


def test_one_hot_points_are_the_models_bit_for_bit():
    a = linear([[0.1, 0.7]], [0.3])
    b = linear([[0.3, 0.2]], [1e-8])
    for nets in [(a, b), (a, b, a)]:
        comb = Combination(a, states(*nets))
        for i, net in enumerate(nets):
            hot = [0.0] * len(nets)
            hot[i] = 1.0
            assert same(comb.state(hot), net.state_dict())
    # a + 1 * (b - a) is not b in float32 here, so the one-hot path is what gives b exactly
    assert not torch.equal(a.bias + 1.0 * (b.bias - a.bias), b.bias)


def test_a_hull_point_is_the_first_plus_the_weighted_differences():
    hull = Combination(A, states(A, B, C))
    point = hull.state((0.5, 0.25, 0.25))
    assert torch.equal(point["weight"], torch.tensor([[1.25, 0.5], [2.75, 0.75]]))
    assert torch.equal(point["bias"], torch.tensor([0.375, 0.375]))
    odd = hull.state([0.2, 0.3, 0.5])
    for key in ("weight", "bias"):
        s = torch.stack([n.state_dict()[key] for n in (A, B, C)])
        w = torch.tensor([0.3, 0.5], dtype=torch.float64).to(F32)
        assert torch.equal(odd[key], s[0] + torch.tensordot(w, s[1:] - s[0], dims=1))
    # three models with the middle one zero are a line of the others
    assert torch.equal(hull.state((0.5, 0.0, 0.5))["bias"], torch.tensor([-0.25, 0.75]))
    # identical models: every point is that model exactly (a flat landscape)
    flat = Combination(A, states(A, A, A))
    assert same(flat.state((0.7, -0.4, 0.7)), A.state_dict())
    assert same(Combination(A, states(A, A)).state((0.3, 0.7)), A.state_dict())


def test_coefficients_must_be_one_per_model_and_sum_to_one():
    hull = Combination(A, states(A, B, C))
    hull.state((0.5, 0.5 + 9e-7, -9e-7))
    hull.state((0.5, 0.5 - 9e-7, 0.0))
    for bad in [(0.5, 0.5 + 2e-6, 0.0), (0.5, 0.5 - 2e-6, 0.0), (1.0, 1.0, -0.5), (0.5, 0.5), (0.5, 0.25, 0.25, 0.0)]:
        with pytest.raises(ArgumentError) as info:
            hull.state(bad)
        assert str(info.value) == f"need 3 coefficients summing to 1, got {[float(x) for x in bad]}"
    line = Combination(A, states(A, B))
    with pytest.raises(ArgumentError, match=r"^need 2 coefficients summing to 1, got \[0\.5, 0\.6\]$"):
        line.state([0.5, 0.6])


def test_integer_buffers_come_from_the_first_model():
    nets = [bn_net([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]) for _ in range(3)]
    for n, net in enumerate(nets):
        net[1].num_batches_tracked.fill_(n + 5)
        net[1].running_mean.fill_(float(n))
    comb = Combination(nets[0], states(*nets))
    point = comb.state((0.0, 0.5, 0.5))
    assert point["1.num_batches_tracked"].item() == 5 and point["1.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(point["1.running_mean"], torch.tensor([1.5, 1.5]))
    nets[0][1].num_batches_tracked.fill_(99)  # a copy was kept
    assert comb.state((0.0, 1.0, 0.0))["1.num_batches_tracked"].item() == 5


def test_masks_multiply_every_combined_weight():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    line = Combination(A, states(A, B), masks={"weight": mask.bool()})
    assert torch.equal(line.state((0.5, 0.5))["weight"], torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
    assert torch.equal(line.state((0.0, 1.0))["weight"], torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(line.state((0.5, 0.5))["bias"], torch.tensor([1.0, 0.0]))
    hull = Combination(A, states(A, B, C), masks={"bias": torch.tensor([0, 1])})
    assert torch.equal(hull.state((0.5, 0.25, 0.25))["bias"], torch.tensor([0.0, 0.375]))
    assert check_masks(None, A.state_dict()) == {}
    out = check_masks({"weight": mask.int()}, A.state_dict())
    assert out["weight"].dtype == F32 and torch.equal(out["weight"], mask)


@pytest.mark.parametrize("masks, message", [
    ([1], "masks must be a mapping of parameter names to 0/1 tensors, got list"),
    ({"w": torch.ones(2, 2)}, "masks has an entry 'w' that is not a parameter of the model"),
    ({"weight": torch.ones(2)}, "mask 'weight' must be a tensor of the parameter's shape (2, 2), got (2,)"),
    ({"weight": [[1, 1], [1, 1]]}, "mask 'weight' must be a tensor of the parameter's shape (2, 2), got list"),
    ({"bias": torch.tensor([1.0, 0.5])}, "mask 'bias' must hold only 0 and 1"),
    ({"bias": torch.tensor([1.0, -1.0])}, "mask 'bias' must hold only 0 and 1"),
])
def test_bad_masks_are_refused_by_name(masks, message):
    with pytest.raises(ArgumentError) as info:
        Combination(A, states(A, B), masks=masks)
    assert str(info.value) == message


def test_bad_models_are_refused_by_name():
    with pytest.raises(ArgumentError, match=r"^endpoints must be torch\.nn\.Module instances, got dict$"):
        Combination({}, states(A, B), name="endpoints")
    with pytest.raises(ArgumentError, match=r"^endpoints must not be empty$"):
        Combination(A, [], name="endpoints")
    wide = nn.Linear(3, 2)
    with pytest.raises(ArgumentError) as info:
        Combination(A, states(A, B, wide), name="ends")
    assert str(info.value) == "ends[2] is not the architecture of ends[0]: 'weight' has shape (2, 3) vs (2, 2)"
    no_bias = nn.Linear(2, 2, bias=False)
    with pytest.raises(ArgumentError) as info:
        Combination(A, [A.state_dict(), no_bias.state_dict()])
    assert str(info.value) == "models[1] is not the architecture of models[0]: tensor 'bias' is in only one of them"
    with pytest.raises(ArgumentError) as info:
        Combination(A, [A.state_dict(), {**B.state_dict(), "extra": torch.zeros(1)}])
    assert str(info.value) == "models[1] is not the architecture of models[0]: tensor 'extra' is in only one of them"
    double = {k: v.double() for k, v in B.state_dict().items()}
    with pytest.raises(ArgumentError) as info:
        Combination(A, [A.state_dict(), double])
    assert str(info.value) == ("models[1] is not the architecture of models[0]: 'weight' has dtype torch.float64 "
                               "vs torch.float32")
    # the template's own state is the reference, even when the first state differs from it
    with pytest.raises(ArgumentError, match=r"^models\[0\] is not the architecture of models\[0\]"):
        Combination(A, [wide.state_dict(), wide.state_dict()])


# --- loading and evaluating -----------------------------------------------------------------------------------

def test_the_callers_models_and_states_are_never_changed():
    before = [snapshot(n) for n in (A, B, C)]
    given = states(A, B, C)
    A.train()
    comb = Combination(A, given, masks={"weight": torch.zeros(2, 2)})
    model = comb.load((0.0, 0.5, 0.5))
    assert model is comb.model and model is not A and not model.training and A.training
    assert torch.equal(model.weight, torch.zeros(2, 2))
    comb.evaluate([(1.0, 0.0, 0.0), (0.2, 0.3, 0.5)], {"d": [(X, Y)]})
    assert all(same(snapshot(n), b) for n, b in zip((A, B, C), before, strict=True))
    assert all(same(g, b) for g, b in zip(given, before, strict=True))


def test_load_puts_the_point_into_the_private_model():
    line = Combination(A, states(A, B))
    model = line.load((0.5, 0.5))
    assert torch.equal(model.weight, torch.tensor([[2.0, 0.0], [2.0, 0.0]]))
    assert torch.equal(model.bias, torch.tensor([1.0, 0.0]))
    assert torch.equal(model(X), linear([[2.0, 0.0], [2.0, 0.0]], [1.0, 0.0])(X))
    assert same(line.load((1.0, 0.0)).state_dict(), A.state_dict())


class Hooked(nn.Linear):
    """A layer with its own state loading: the combination must go through load_state_dict."""

    def _load_from_state_dict(self, state_dict, prefix, *args):
        super()._load_from_state_dict(state_dict, prefix, *args)
        self.loads = getattr(self, "loads", 0) + 1


def test_a_module_with_its_own_loading_gets_load_state_dict():
    a, b = Hooked(2, 2), Hooked(2, 2)
    a.load_state_dict(A.state_dict())
    b.load_state_dict(B.state_dict())
    line = Combination(a, states(a, b))
    assert line._targets is None
    model = line.load((0.5, 0.5))
    assert model.loads == 2 and torch.equal(model.weight, torch.tensor([[2.0, 0.0], [2.0, 0.0]]))
    plain = Combination(A, states(A, B))
    assert plain._targets is not None and set(plain._targets) == {"weight", "bias"}
    assert plain._targets["weight"].data_ptr() == plain.model.weight.data_ptr()
    hooked = Combination(A, states(A, B))
    hooked.model.register_load_state_dict_post_hook(lambda *args: None)
    assert Combination(hooked.model, states(A, B))._targets is None
    pre = nn.Linear(2, 2)
    pre._register_load_state_dict_pre_hook(lambda *args: None)
    assert Combination(pre, states(A, B))._targets is None
    sd_hook = nn.Linear(2, 2)
    sd_hook._register_state_dict_hook(lambda *args: None)
    assert Combination(sd_hook, states(A, B))._targets is None
    tied = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    tied[1].weight = tied[0].weight
    assert Combination(tied, [tied.state_dict()] * 2)._targets is None
    with pytest.warns(UserWarning, match="zero-element"):
        empty = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 0))
    assert Combination(empty, [empty.state_dict()] * 2)._targets is None


def test_the_endpoints_losses_are_the_models_mean_losses():
    line = Combination(A, states(A, B))
    data = {"train": [(X[:3], Y[:3]), (X[3:], Y[3:])], "test": [(X, Y)]}
    rows = line.evaluate([(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)], data, progress=False)
    assert [list(r) for r in rows] == [["train", "test"]] * 3
    for row, net in zip(rows, (A, B), strict=False):
        assert row["train"] == mean_loss(net, data["train"]) and row["test"] == mean_loss(net, [(X, Y)])
        assert row["train"].loss == pytest.approx(row["test"].loss, rel=1e-6)
        assert row["test"].loss == pytest.approx(ce(net, X, Y), rel=1e-6)
    mid = linear([[2.0, 0.0], [2.0, 0.0]], [1.0, 0.0])
    assert rows[2]["test"] == mean_loss(mid, [(X, Y)])
    assert rows[0]["test"].acc == 0.25 and rows[1]["test"].acc == 0.5 and rows[2]["test"].acc == 0.5


def test_evaluate_skips_the_rows_already_done_and_reports_each_new_one():
    line = Combination(A, states(A, B))
    done = {1: {"d": Evaluation(7.0, None)}}
    seen = []
    rows = line.evaluate([(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)], {"d": [(X, Y)]}, results=done,
                         on_point=lambda r: seen.append(sorted(r)))
    assert seen == [[0, 1], [0, 1, 2]]
    assert rows[1]["d"] == Evaluation(7.0, None) and rows[0]["d"] == mean_loss(A, [(X, Y)])
    assert sorted(done) == [0, 1, 2] and rows[2] is done[2]
    assert line.evaluate([], {"d": [(X, Y)]}) == []


def test_a_loss_that_is_not_finite_names_the_point():
    line = Combination(A, states(A, B))
    with pytest.raises(ArgumentError) as info:
        line.evaluate([(0.75, 0.25)], {"val": [(X, Y)]}, loss_fn=lambda out, y: out.sum() * math.inf)
    assert str(info.value).startswith("the val loss at coefficients [0.75, 0.25] is not finite (")
    with pytest.raises(ArgumentError, match=r"^the data loss of model is not finite \(nan\)"):
        mean_loss(A, [(X, Y)], loss_fn=lambda out, y: out.sum() * math.nan)


def test_mean_loss_weighs_every_sample_and_restores_the_mode():
    A.train()
    whole = mean_loss(A, [(X, Y)])
    split = mean_loss(A, [(X[:1], Y[:1]), (X[1:], Y[1:])])
    assert whole.loss == pytest.approx(ce(A, X, Y), rel=1e-6) and split.loss == pytest.approx(whole.loss, rel=1e-6)
    assert whole.acc == split.acc == 0.25 and A.training
    A.eval()
    assert mean_loss(A, [(X, Y)]) == whole and not A.training
    A.train()
    # another loss: its mean over samples, acc None unless the outputs are class logits
    sq = mean_loss(A, [(X[:1], torch.zeros(1, 2)), (X[1:], torch.zeros(3, 2))],
                   loss_fn=lambda out, y: ((out - y) ** 2).sum(1).mean())
    with torch.no_grad():
        assert sq.loss == pytest.approx(float((A(X) ** 2).sum(1).mean()), rel=1e-6)
    assert sq.acc is None
    mse = mean_loss(A, [(X, Y)], loss_fn=lambda out, y: nn.functional.cross_entropy(out, y))
    assert mse.acc == 0.25 and mse.loss == pytest.approx(whole.loss, rel=1e-6)
    with pytest.raises(ArgumentError, match=r"^val is empty: it yielded no samples$"):
        mean_loss(A, [(X[:0], Y[:0])], name="val")


def test_accuracy_counts_the_argmax_on_class_logits_only():
    net = linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    x = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    assert mean_loss(net, [(x, torch.tensor([0, 1, 1]))]).acc == pytest.approx(2 / 3)
    assert mean_loss(net, [(x[:1], torch.tensor([1])), (x[1:], torch.tensor([0, 0]))]).acc == pytest.approx(1 / 3)
    assert is_class_logits(torch.zeros(3, 2), torch.tensor([0, 1, 1]))
    assert not is_class_logits(torch.zeros(3, 2), torch.zeros(3))
    assert not is_class_logits(torch.zeros(3, 2), torch.zeros(3, dtype=torch.complex64))
    assert not is_class_logits(torch.zeros(3), torch.tensor([0, 1, 1]))
    assert not is_class_logits(torch.zeros(3, 2, 1), torch.tensor([0, 1, 1]))
    assert not is_class_logits(torch.zeros(3, 2), torch.tensor([[0], [1], [1]]))
    assert not is_class_logits(torch.zeros(4, 2), torch.tensor([0, 1, 1]))
    assert not is_class_logits([torch.zeros(3, 2)], torch.tensor([0, 1, 1]))


# --- BatchNorm ------------------------------------------------------------------------------------------------

BN_A = bn_net([[1.0, 0.0], [1.0, 1.0]], [0.0, 1.0], [1.0, 2.0], [0.0, 0.5])
BN_B = bn_net([[3.0, -1.0], [0.0, 2.0]], [1.0, 0.0], [0.5, 1.0], [1.0, 0.0])
BN_BATCHES = [(X[:2], Y[:2]), (X[2:], Y[2:])]


def recalibrated(c: float) -> nn.Module:
    net = bn_net([[1.0, 0.0], [1.0, 1.0]], [0.0, 1.0], [1.0, 2.0], [0.0, 0.5])
    net.load_state_dict(Combination(BN_A, states(BN_A, BN_B)).state((1.0 - c, c)))
    recalibrate_batchnorm(net, BN_BATCHES)
    return net.eval()


@pytest.mark.parametrize("c", [0.0, 0.5, 0.25])
def test_batchnorm_at_a_point_is_recalibrate_batchnorm_of_the_combined_model(c):
    line = Combination(BN_A, states(BN_A, BN_B))
    assert line.has_batchnorm
    model = line.load((1.0 - c, c), BN_BATCHES)
    want = recalibrated(c)
    assert not model.training and same(model.state_dict(), want.state_dict())
    assert model[1].momentum == 0.1
    with torch.no_grad():
        h = model[0](X)
        means = torch.stack([h[:2].mean(0), h[2:].mean(0)]).mean(0)
    assert torch.allclose(model[1].running_mean, means, atol=1e-6)
    # without batches the stored statistics are combined like the weights
    BN_B[1].running_var.fill_(3.0)
    plain = Combination(BN_A, states(BN_A, BN_B)).load((0.5, 0.5))
    assert torch.equal(plain[1].running_var, torch.tensor([2.0, 2.0]))
    BN_B[1].running_var.fill_(1.0)


def test_a_scan_recomputes_batchnorm_at_every_point_from_batches_read_once():
    line = Combination(BN_A, states(BN_A, BN_B))
    reads = []

    def stream():
        reads.append(1)
        yield from BN_BATCHES

    rows = line.evaluate([(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)], {"d": [(X, Y)]}, bn=stream())
    assert reads == [1]
    for row, c in zip(rows, (0.0, 0.5, 1.0), strict=True):
        assert row["d"] == mean_loss(recalibrated(c), [(X, Y)])
    assert rows[0]["d"] != rows[2]["d"]
    assert line._staged(None) is None and line._staged(BN_BATCHES) is BN_BATCHES
    assert line._staged(iter(BN_BATCHES)) == BN_BATCHES
    no_bn = Combination(A, states(A, B))
    assert not no_bn.has_batchnorm and no_bn._staged(BN_BATCHES) is None
    assert same(no_bn.load((0.5, 0.5), bn=[("not", "a batch")]).state_dict(),
                linear([[2.0, 0.0], [2.0, 0.0]], [1.0, 0.0]).state_dict())


def test_batchnorm_batches_the_model_cannot_take_are_named():
    line = Combination(BN_A, states(BN_A, BN_B))
    with pytest.raises(ArgumentError, match="bn_data"):
        line.load((0.5, 0.5), [(torch.zeros(4, 3), Y)])


# --- helpers --------------------------------------------------------------------------------------------------

def test_even_batches_splits_the_same_samples_into_near_equal_batches():
    xs = torch.arange(7.0).unsqueeze(1)
    ys = torch.arange(7)
    out = even_batches([(xs[:4], ys[:4]), (xs[4:6], ys[4:6]), (xs[6:], ys[6:])])
    assert [len(y) for _, y in out] == [4, 3]
    assert torch.equal(torch.cat([x for x, _ in out]), xs) and torch.equal(torch.cat([y for _, y in out]), ys)
    five = even_batches([(xs[:4], ys[:4]), (xs[4:5], ys[4:5])])
    assert [y.tolist() for _, y in five] == [[0, 1, 2], [3, 4]]
    nine, nys = torch.arange(9.0), torch.arange(9)
    nines = even_batches([(nine[:4], nys[:4]), (nine[4:8], nys[4:8]), (nine[8:], nys[8:])])
    assert [len(y) for _, y in nines] == [3, 3, 3]
    one = [(xs, ys)]
    assert even_batches(one) == one and even_batches(one) is not one
    maps = even_batches([({"a": xs[:4], "b": xs[:4] * 2}, ys[:4]), ({"a": xs[4:5], "b": xs[4:5] * 2}, ys[4:5])])
    assert [len(y) for _, y in maps] == [3, 2] and torch.equal(maps[1][0]["b"], torch.tensor([[6.0], [8.0]]))
    odd = [(["x"] * 4, ys[:4]), (["y"], ys[4:5])]
    assert even_batches(odd) == odd
    mixed = [({"a": xs[:4]}, ys[:4]), ({"b": xs[4:5]}, ys[4:5])]
    assert even_batches(mixed) == mixed
    not_tensors = [({"a": [1, 2, 3, 4]}, ys[:4]), ({"a": [5]}, ys[4:5])]
    assert even_batches(not_tensors) == not_tensors


def test_model_device_and_the_gram_of_the_displacements():
    assert model_device(A) == torch.device("cpu") and model_device(nn.ReLU()) == torch.device("cpu")
    assert model_device(nn.BatchNorm1d(2, affine=False)) == torch.device("cpu")
    hull = Combination(A, states(A, B, C))
    with torch.no_grad():
        d1 = torch.cat([(B.weight - A.weight).flatten(), B.bias - A.bias]).double()
        d2 = torch.cat([(C.weight - A.weight).flatten(), C.bias - A.bias]).double()
    want = np.array([[float(d1 @ d1), float(d1 @ d2)], [float(d2 @ d1), float(d2 @ d2)]])
    gram = hull.displacement_gram()
    assert gram.dtype == np.float64 and np.array_equal(gram, want)
    assert np.array_equal(gram, [[30.0, 15.0], [15.0, 39.5]])
    # buffers (BatchNorm's running statistics) are not displacements
    BN_B[1].running_mean.fill_(5.0)
    g = Combination(BN_A, states(BN_A, BN_B)).displacement_gram()
    BN_B[1].running_mean.fill_(0.0)
    assert g.shape == (1, 1) and g[0, 0] == 4 + 1 + 1 + 1 + 1 + 1 + 0.25 + 1 + 1 + 0.25


# --- inputs the model cannot take, float64 models, state hooks -------------------------------------------------

def test_inputs_the_model_cannot_take_are_named_with_their_shapes():
    with pytest.raises(ArgumentError, match=r"^val: the model cannot take these inputs \(.*\(3, 3\).*\): "):
        mean_loss(A, [(torch.zeros(3, 3), Y[:3])], name="val")
    line = Combination(BN_A, states(BN_A, BN_B))
    with pytest.raises(ArgumentError, match=r"^bn_data: the model cannot take these inputs \(.*\(4, 3\).*\): "):
        line.load((0.5, 0.5), [(torch.zeros(4, 3), torch.zeros(4, 7))])
    with pytest.raises(ArgumentError, match=r"^val is empty: it yielded no samples$"):
        line.evaluate([(0.5, 0.5)], {"val": [(X[:0], Y[:0])]})


def test_the_accuracy_adds_up_over_batches():
    net = linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    x = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    assert mean_loss(net, [(x[:1], torch.tensor([0])), (x[1:], torch.tensor([0, 0]))]).acc == pytest.approx(2 / 3)


def test_float64_models_are_combined_in_float64():
    a, b, c = (net.double() for net in (linear([[0.1, 0.2]], [0.3]), linear([[0.7, -0.2]], [0.9]),
                                         linear([[0.4, 0.4]], [-0.1])))
    line = Combination(a, states(a, b))
    point = line.state((0.7, 0.3))
    with torch.no_grad():
        assert point["weight"].dtype == torch.float64
        assert torch.equal(point["weight"], a.weight + (b.weight - a.weight) * 0.3)
        hull = Combination(a, states(a, b, c)).state((0.4, 0.3, 0.3))
        want = a.bias + torch.tensordot(torch.tensor([0.3, 0.3], dtype=torch.float64),
                                        torch.stack([b.bias - a.bias, c.bias - a.bias]), dims=1)
        assert torch.equal(hull["bias"], want)


def test_tensors_of_different_dtypes_keep_their_dtypes_on_a_line():
    nets = [linear([[1.0, 2.0]], [0.5]), linear([[3.0, 0.0]], [0.1])]
    for n, net in enumerate(nets):
        net.register_buffer("scale", torch.tensor([0.1 * (n + 1)], dtype=torch.float64))
    point = Combination(nets[0], states(*nets)).state((0.5, 0.5))
    assert point["weight"].dtype == F32 and point["scale"].dtype == torch.float64
    assert torch.equal(point["scale"], torch.tensor([0.1], dtype=torch.float64) + torch.tensor(
        [0.2 - 0.1], dtype=torch.float64) * 0.5)


def test_a_state_dict_pre_hook_also_gets_load_state_dict():
    hooked = nn.Linear(2, 2)
    hooked.register_state_dict_pre_hook(lambda *args: None)
    assert Combination(hooked, states(A, B))._targets is None


def test_the_progress_bar_counts_the_points_and_follows_progress(monkeypatch):
    import landscape.combination as combination

    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.updates = kwargs, []
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *args):
            return False

        def update(self, n=1):
            self.updates.append(n)

    monkeypatch.setattr(combination, "tqdm", Bar)
    line = Combination(A, states(A, B))
    rows = [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)]
    line.evaluate(rows, {"d": [(X, Y)]}, results={1: {"d": Evaluation(1.0, None)}})
    line.evaluate(rows[:1], {"d": [(X, Y)]}, desc="barrier", progress=False)
    line.evaluate(rows[:1], {"d": [(X, Y)]}, progress=True)
    assert [b.kwargs for b in bars] == [
        {"total": 3, "desc": "points", "unit": "point", "leave": False, "disable": None},
        {"total": 1, "desc": "barrier", "unit": "point", "leave": False, "disable": True},
        {"total": 1, "desc": "points", "unit": "point", "leave": False, "disable": False},
    ]
    assert [b.updates for b in bars] == [[1, 1, 1], [0, 1], [0, 1]]


def test_the_first_batch_decides_whether_a_data_set_is_classified():
    """Class logits or not is decided once per data set, by its first batch: accuracy over every sample when it
    holds class labels (A predicts (1, 0, 0, 0), so one of the four is right), None when it does not."""
    loss = lambda out, y: ((out[:, 0] - y.float()) ** 2).mean()  # noqa: E731
    labels_first = mean_loss(A, [(X[:2], Y[:2]), (X[2:], Y[2:].float())], loss_fn=loss)
    assert labels_first.acc == 0.25
    assert mean_loss(A, [(X[:2], Y[:2].float()), (X[2:], Y[2:])], loss_fn=loss).acc is None
