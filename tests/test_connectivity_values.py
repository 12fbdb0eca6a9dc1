"""The numbers of landscape.connectivity computed by hand: both barrier definitions, the loss and error along a
line where they are known in closed form, the endpoints with and without recomputed BatchNorm, the hull's
samples and the plane's coordinates and grid, the JSON of each result and the refusals. Each test runs in well
under a second."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from core.averaging import recalibrate_batchnorm
from core.evaluate import Evaluation
from landscape.batches import ArgumentError
from landscape.connectivity import (
    HULL_STREAM,
    PlaneGeometry,
    _count,
    _line,
    frankle_barrier,
    hull_losses,
    linear_barrier,
    linear_barriers,
    loss_plane,
    max_barrier,
    plane_geometry,
    simplex_samples,
)
from tests.conftest import linear_net

X1, Y0 = torch.tensor([[1.0, 0.0]]), torch.tensor([0])




def _bent(outputs, targets):
    """A loss of the two logits (o_0, o_1) that is concave along the test's line: 4 o_0 o_1 + o_1 / 2."""
    return (4 * outputs[:, 0] * outputs[:, 1] + outputs[:, 1] / 2).mean()


def test_the_two_barrier_definitions_on_known_curves():
    """Frankle: max of v - the chord from v(0) to v(1); max: the peak above the higher endpoint."""
    assert frankle_barrier([0.0, 0.25, 1.0], [1.0, 3.0, 5.0]) == 1.0  # chord 1 + 4 lambda: (1, 2, 5)
    assert frankle_barrier([0.0, 0.5, 1.0], [1.0, 3.0, 2.0]) == 1.5 and max_barrier([1.0, 3.0, 2.0]) == 1.0
    assert frankle_barrier([0.0, 0.5, 1.0], [4.0, 1.0, 2.0]) == 0.0 and max_barrier([4.0, 1.0, 2.0]) == 0.0
    assert max_barrier([2.0, 1.0, 5.0, 4.0]) == 1.0 and max_barrier([2, 7, 3]) == 4.0
    assert isinstance(frankle_barrier([0, 1], [1, 1]), float) and isinstance(max_barrier([1, 1]), float)


def test_the_loss_and_error_along_a_line_known_in_closed_form():
    """a = [[1, 0], [0, 0]], b = [[0, 0], [2, 0]]: at lambda the logits of x = (1, 0) are (1 - lambda, 2 lambda),
    so the loss 4 o_0 o_1 + o_1 / 2 = 8 lambda (1 - lambda) + lambda is (0, 1.75, 2.5, 2.25, 1) at lambda = 0,
    1/4, ..., 1: 2.0 above the chord (at 1/2) and 1.5 above b. Class 0 wins while 1 - lambda > 2 lambda:
    errors (0, 0, 1, 1, 1), 0.5 above their chord, 0 above the higher end."""
    a, b = linear_net([[1.0, 0.0], [0.0, 0.0]]), linear_net([[0.0, 0.0], [2.0, 0.0]])
    line = linear_barrier(a, b, (X1, Y0), loss_fn=_bent, points=5)
    assert line.lambdas == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert line.losses == pytest.approx((0.0, 1.75, 2.5, 2.25, 1.0), abs=1e-6)
    assert line.barrier == pytest.approx(2.0, abs=1e-6) and line.barrier_max == pytest.approx(1.5, abs=1e-6)
    assert line.errors == (0.0, 0.0, 1.0, 1.0, 1.0) and line.accuracies == (1.0, 1.0, 0.0, 0.0, 0.0)
    assert line.error_barrier == 0.5 and line.error_barrier_max == 0.0
    assert line.endpoint_losses == pytest.approx((0.0, 1.0), abs=1e-6) and line.endpoint_errors == (0.0, 1.0)
    assert line.endpoint_accuracies == (1.0, 0.0)
    assert line.bn == "no BatchNorm layers: nothing to recalibrate" and line.alignment is None
    back = linear_barrier(b, a, (X1, Y0), loss_fn=_bent, points=5)
    assert back.losses == pytest.approx(line.losses[::-1], abs=1e-6) and back.errors == line.errors[::-1]
    assert back.barrier == pytest.approx(2.0, abs=1e-6) and back.barrier_max == pytest.approx(1.5, abs=1e-6)


def test_a_regression_line_has_no_errors():
    """w(lambda) = 1 - 2 lambda on x = 1, y = 0 under MSE: the loss (1 - 2 lambda)^2 = (1, 0, 1), a convex curve."""
    a, b = linear_net([[1.0]]), linear_net([[-1.0]])
    line = linear_barrier(a, b, (torch.ones(1, 1), torch.zeros(1, 1)), loss_fn=nn.functional.mse_loss, points=3)
    assert line.losses == (1.0, 0.0, 1.0) and line.barrier == 0.0 and line.barrier_max == 0.0
    assert (line.errors, line.error_barrier, line.error_barrier_max, line.accuracies) == (None, None, None, None)
    assert (line.endpoint_losses, line.endpoint_errors, line.endpoint_accuracies) == ((1.0, 1.0), None, None)


def test_the_lambdas_are_evenly_spaced_and_rounded():
    a = linear_net([[1.0, 0.0], [0.0, 0.0]])
    line = linear_barrier(a, a, (X1, Y0), loss_fn=_bent, points=4)
    assert line.lambdas == (0.0, 0.333333333333, 0.666666666667, 1.0)
    assert line.barrier == 0.0 and line.losses == (0.0, 0.0, 0.0, 0.0)


def test_endpoints_are_the_models_own_when_batchnorm_is_recomputed():
    """With BatchNorm recomputed on other data, losses[0] is a's loss with new statistics while endpoint_losses
    are a's and b's own (their stored statistics), evaluated in eval mode."""
    torch.manual_seed(0)
    a, b = (nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)) for _ in range(2))
    for net, mean in ((a, 3.0), (b, -1.0)):
        net[1].running_mean.fill_(mean)
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    line = linear_barrier(a, b, (x, y), points=3, bn_data=[(x * 5, y)])

    def own(net):
        net.eval()
        with torch.no_grad():
            out = net(x)
        return float(nn.functional.cross_entropy(out, y)), float((out.argmax(1) != y).float().mean())

    (loss_a, err_a), (loss_b, err_b) = own(a), own(b)
    assert line.endpoint_losses == pytest.approx((loss_a, loss_b), rel=1e-6)
    assert line.endpoint_errors == pytest.approx((err_a, err_b)) and line.endpoint_accuracies == pytest.approx(
        (1 - err_a, 1 - err_b))
    assert line.losses[0] != pytest.approx(loss_a, rel=1e-3) and line.bn == "recalibrated on 6 samples"
    stored = linear_barrier(a, b, (x, y), points=3, bn_data=())
    assert stored.bn == "stored BatchNorm statistics combined like the weights"
    assert (stored.losses[0], stored.losses[-1]) == pytest.approx((loss_a, loss_b), rel=1e-6)
    assert stored.endpoint_losses == (stored.losses[0], stored.losses[-1])
    with pytest.raises(ArgumentError, match="^bn_data is empty: it yielded no batch$"):
        linear_barrier(a, b, (x, y), points=3, bn_data=iter([]))


def test_linear_barriers_measure_each_data_set_on_one_line():
    a, b = linear_net([[1.0, 0.0], [0.0, 0.0]]), linear_net([[0.0, 0.0], [2.0, 0.0]])
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    both = linear_barriers(a, b, {"first": (x[:1], Y0), "second": (x[1:], Y0)}, loss_fn=_bent, points=5)
    assert list(both) == ["first", "second"]
    assert both["first"] == linear_barrier(a, b, (x[:1], Y0), loss_fn=_bent, points=5)
    assert both["second"].losses == pytest.approx((0.0, 6.5, 9.0, 7.5, 2.0), abs=1e-6)  # x = 2: 32 l (1 - l) + 2 l


def test_the_line_result_and_its_json():
    values = [Evaluation(1.0, 0.5), Evaluation(3.0, 0.25), Evaluation(2.0, 0.75)]
    ends = [Evaluation(0.5, 1.0), Evaluation(4.0, 0.0)]
    line = _line((0.0, 0.5, 1.0), values, ends, "note", None)
    assert (line.losses, line.barrier, line.barrier_max) == ((1.0, 3.0, 2.0), 1.5, 1.0)
    assert line.errors == (0.5, 0.75, 0.25) and line.accuracies == (0.5, 0.25, 0.75)
    assert line.error_barrier == 0.375 and line.error_barrier_max == 0.25  # chord 0.5 - 0.25 lambda
    assert (line.endpoint_losses, line.endpoint_errors, line.endpoint_accuracies) == ((0.5, 4.0), (0.0, 1.0),
                                                                                      (1.0, 0.0))
    assert line.to_json() == {
        "lambdas": [0.0, 0.5, 1.0], "losses": [1.0, 3.0, 2.0], "barrier": 1.5, "barrier_max": 1.0,
        "errors": [0.5, 0.75, 0.25], "error_barrier": 0.375, "error_barrier_max": 0.25, "bn": "note",
        "endpoint_losses": [0.5, 4.0], "endpoint_errors": [0.0, 1.0], "accuracies": [0.5, 0.25, 0.75],
        "endpoint_accuracies": [1.0, 0.0]}
    plain = _line((0.0, 1.0), [Evaluation(1.0, None), Evaluation(2.0, None)],
                  [Evaluation(1.0, None), Evaluation(2.0, None)], "n", None).to_json()
    assert plain["errors"] is None and plain["endpoint_errors"] is None and plain["accuracies"] is None
    assert plain["endpoint_accuracies"] is None and "alignment" not in plain


def test_an_aligned_line_runs_to_the_permuted_model():
    """b is a with its two hidden units swapped: aligned, the line runs from a to a copy of a (a flat line);
    unaligned, its midpoint averages the swapped units."""
    a = nn.Sequential(linear_net([[1.0], [-2.0]]), nn.ReLU(), linear_net([[3.0, 0.5]]))
    b = nn.Sequential(linear_net([[-2.0], [1.0]]), nn.ReLU(), linear_net([[0.5, 3.0]]))
    data = (torch.tensor([[1.0], [-1.0]]), torch.tensor([[3.0], [1.0]]))  # a(1) = 3, a(-1) = 0.5 * 2 = 1
    for align, method in ((True, "weights"), ("weights", "weights"), ("activations", "activations")):
        line = linear_barrier(a, b, data, loss_fn=nn.functional.mse_loss, points=3, align=align)
        assert line.losses == (0.0, 0.0, 0.0) and line.alignment.method == method
        assert line.to_json()["alignment"] == line.alignment.to_json()
        assert line.alignment.permutations == {next(iter(line.alignment.permutations)): (1, 0)}
    plain = linear_barrier(a, b, data, loss_fn=nn.functional.mse_loss, points=3)
    # midpoint: first layer (-0.5, -0.5) x, second (1.75, 1.75): x = 1 gives 0, x = -1 gives 1.75
    assert plain.losses == pytest.approx((0.0, (9.0 + 0.75**2) / 2, 0.0)) and plain.alignment is None
    masks = {"0.weight": torch.tensor([[1.0], [0.0]]), "2.weight": torch.tensor([[1.0, 0.0]])}
    masked = linear_barrier(a, b, data, loss_fn=nn.functional.mse_loss, points=3, align=True, masks=masks)
    # a's masks and b's (the same masks, permuted to (0, 1)) are united: every weight is kept, the line is flat
    assert masked.losses == (0.0, 0.0, 0.0)


def test_simplex_samples_are_the_seeded_dirichlet_rows_normalised():
    rows = np.random.default_rng([2, HULL_STREAM]).dirichlet(np.ones(3), size=4)
    assert not np.all(rows.sum(axis=1) == 1.0)  # seed 2: numpy's rows miss 1 in the last bit
    got = simplex_samples(3, 4, 2)
    assert np.array_equal(got, rows / rows.sum(axis=1, keepdims=True)) and got.shape == (4, 3)
    square = simplex_samples(3, 3, 5)
    assert np.allclose(square.sum(axis=1), 1.0) and not np.array_equal(square, simplex_samples(3, 3, 6))
    assert simplex_samples(4, 2, 0).shape == (2, 4)


def test_hull_losses_on_a_line_of_two_models():
    """Two models span the line of the closed-form test: a sample with coefficients (1 - t, t) has the loss
    8 t (1 - t) + t; the vertices are a and b evaluated like the samples."""
    a, b = linear_net([[1.0, 0.0], [0.0, 0.0]]), linear_net([[0.0, 0.0], [2.0, 0.0]])
    hull = hull_losses([a, b], (X1, Y0), samples=4, seed=3, loss_fn=_bent)
    assert hull.coefficients == tuple(tuple(float(c) for c in row) for row in simplex_samples(2, 4, 3))
    assert hull.losses == pytest.approx(tuple(8 * t * (1 - t) + t for _, t in hull.coefficients), abs=1e-5)
    assert hull.vertex_losses == pytest.approx((0.0, 1.0), abs=1e-6) and hull.vertex_errors == (0.0, 1.0)
    assert hull.errors == tuple(0.0 if 1 - t > 2 * t else 1.0 for _, t in hull.coefficients)
    assert (hull.seed, hull.bn) == (3, "no BatchNorm layers: nothing to recalibrate")
    assert hull.to_json() == {"coefficients": [list(c) for c in hull.coefficients], "losses": list(hull.losses),
                              "vertex_losses": list(hull.vertex_losses), "errors": list(hull.errors),
                              "vertex_errors": [0.0, 1.0], "seed": 3, "bn": hull.bn}
    regression = hull_losses([linear_net([[1.0]]), linear_net([[-1.0]])], (torch.ones(1, 1), torch.zeros(1, 1)),
                             samples=2, loss_fn=nn.functional.mse_loss)
    assert regression.errors is None and regression.vertex_errors is None and regression.seed == 0
    assert regression.to_json()["errors"] is None and regression.to_json()["vertex_errors"] is None
    assert regression.losses == pytest.approx(tuple((1 - 2 * t) ** 2 for _, t in regression.coefficients), abs=1e-6)


def test_plane_geometry_from_the_gram_matrix():
    """u = (2, 0), w = (1, 3): |u| = 2, w's part along u 1, its height 3."""
    geometry = plane_geometry(np.array([[4.0, 2.0], [2.0, 10.0]]))
    assert geometry.vertices == ((0.0, 0.0), (2.0, 0.0), (1.0, 3.0))
    assert geometry.coefficients(0.0, 0.0) == (1.0, 0.0, 0.0) and geometry.coefficients(2.0, 0.0) == (0.0, 1.0, 0.0)
    assert geometry.coefficients(1.0, 3.0) == (0.0, 0.0, 1.0)
    assert geometry.coefficients(0.5, 0.0) == (0.75, 0.25, 0.0) and geometry.coefficients(2.0, 3.0) == (-0.5, 0.5, 1.0)
    xs, ys = geometry.grid(3, 0.5)  # the box [0, 2] x [0, 3] widened by half its extent on each side
    assert xs.tolist() == [-1.0, 1.0, 3.0] and ys.tolist() == [-1.5, 1.5, 4.5]
    xs, ys = PlaneGeometry(((0.0, 0.0), (4.0, 0.0), (-2.0, 1.0))).grid(2, 0.0)
    assert xs.tolist() == [-2.0, 4.0] and ys.tolist() == [0.0, 1.0]
    xs, ys = PlaneGeometry(((0.0, 0.0), (4.0, 0.0), (-2.0, 1.0))).grid(2, 0.5)  # extent (6, 1)
    assert xs.tolist() == [-5.0, 7.0] and ys.tolist() == [-0.5, 1.5]
    assert plane_geometry(np.array([[1e6, 0.0], [0.0, 0.01]])).vertices[2] == (0.0, 0.1)


@pytest.mark.parametrize("gram", [
    [[4.0, 4.0], [4.0, 4.0]],  # w = u
    [[0.0, 0.0], [0.0, 1.0]],  # u = 0
    [[-1e-30, 0.0], [0.0, 1.0]],  # u = 0 up to rounding
    [[1e6, 0.0], [0.0, 1e-8]],  # w's height 1e-4 is below 1e-6 x |u| = 1e-3
    [[1.0, 1.0], [1.0, 1.0 + 1e-13]],  # height ~3e-7 is below 1e-6 x |w| ~ 1e-6
    [[1e12, 0.0], [0.0, 1.0]],  # height 1 is exactly 1e-6 x |u|
])
def test_plane_geometry_refuses_collinear_models(gram):
    with pytest.raises(ArgumentError, match="^the three models are \\(nearly\\) collinear or equal, so no plane passes "
                                            "through them; choose three that differ$"):
        plane_geometry(np.array(gram))


def test_the_loss_plane_grid_known_in_closed_form():
    """theta_1 = 0, theta_2 = E_00, theta_3 = 2 E_10: the point (x, y) of the plane has the logits (x, y) on
    x = (1, 0), so with class 0 its loss is log(1 + e^(y - x)) and it is an error where y > x."""
    models = [linear_net([[0.0, 0.0], [0.0, 0.0]]), linear_net([[1.0, 0.0], [0.0, 0.0]]),
              linear_net([[0.0, 0.0], [2.0, 0.0]])]
    plane = loss_plane(models, (X1, Y0), resolution=3, margin=0)
    assert plane.vertices == ((0.0, 0.0), (1.0, 0.0), (0.0, 2.0)) and plane.margin == 0.0
    assert plane.xs == (0.0, 0.5, 1.0) and plane.ys == (0.0, 1.0, 2.0)
    for iy, y in enumerate(plane.ys):
        assert plane.losses[iy] == pytest.approx(tuple(math.log1p(math.exp(y - x)) for x in plane.xs), rel=1e-6)
    assert plane.errors == ((0.0, 0.0, 0.0), (1.0, 1.0, 0.0), (1.0, 1.0, 1.0))
    assert plane.bn == "no BatchNorm layers: nothing to recalibrate"
    assert plane.to_json() == {"xs": [0.0, 0.5, 1.0], "ys": [0.0, 1.0, 2.0], "losses": [list(r) for r in plane.losses],
                               "errors": [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]],
                               "vertices": [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], "margin": 0.0, "bn": plane.bn}
    wide = loss_plane(models, (X1, Y0), resolution=2, margin=0.5, loss_fn=lambda o, t: o[:, 1].mean())
    assert wide.xs == (-0.5, 1.5) and wide.ys == (-1.0, 3.0) and wide.margin == 0.5
    assert wide.losses == ((-1.0, -1.0), (3.0, 3.0))  # the loss is the second logit, y
    regression = loss_plane([linear_net([[0.0, 0.0]]), linear_net([[1.0, 0.0]]), linear_net([[0.0, 1.0]])],
                            (torch.tensor([[1.0, 2.0]]), torch.zeros(1, 1)), resolution=2, margin=0,
                            loss_fn=nn.functional.mse_loss)
    assert regression.errors is None and regression.to_json()["errors"] is None
    assert regression.losses == ((0.0, 1.0), (4.0, 9.0))  # (x + 2 y)^2


def test_counts_are_whole_numbers_in_their_range():
    assert _count(2, "points", 2) == 2 and _count(np.int64(7), "points", 2, 7) == 7
    assert type(_count(np.int64(7), "points", 2, 7)) is int
    for bad in (1, True, 2.0, "3"):
        with pytest.raises(ArgumentError, match=f"^points must be an integer >= 2, got {re.escape(repr(bad))}$"):
            _count(bad, "points", 2)
    with pytest.raises(ArgumentError, match="^samples must be at most 1,000 \\(each is one evaluation of the whole "
                                            "data\\), got 1,001$"):
        _count(1001, "samples", 1, 1000)


@pytest.mark.parametrize(("call", "message"), [
    # the counts are checked first, before the models and the data (and before any evaluation)
    (lambda a, b, d: linear_barriers(a, b, {}, points=10_002), "^points must be at most 10,001 "),
    (lambda a, b, d: hull_losses([a], d, samples=100_001), "^samples must be at most 100,000 "),
    (lambda a, b, d: hull_losses([a, b], d, seed=-1), "^seed must be an integer >= 0, got -1$"),
    (lambda a, b, d: loss_plane([a, b, a], d, resolution=1), "^resolution must be an integer >= 2, got 1$"),
    (lambda a, b, d: loss_plane([a, b], d, resolution=1002), "^resolution must be at most 1,001 "),
    (lambda a, b, d: loss_plane([a, b, a], d, margin=-0.5), "^margin must be a finite number >= 0, got -0.5$"),
    (lambda a, b, d: loss_plane([a, b, a], d, margin=True), "^margin must be a finite number >= 0, got True$"),
    (lambda a, b, d: loss_plane([a, b, a], d, margin="1"), "^margin must be a finite number >= 0, got '1'$"),
    (lambda a, b, d: loss_plane([a, b, a], d, margin=math.inf), "^margin must be a finite number >= 0, got inf$"),
    (lambda a, b, d: hull_losses(a, d), "^models must be a sequence of torch.nn.Module, got Linear$"),
    (lambda a, b, d: hull_losses({a, b}, d), "^models must be a sequence of torch.nn.Module, got set$"),
    (lambda a, b, d: loss_plane([a, b, a, b], d), "^models must be exactly 3 modules, got 4$"),
    (lambda a, b, d: hull_losses([a], d), "^models must be at least 2 modules, got 1$"),
    (lambda a, b, d: hull_losses([a, b, "c"], d), "^models\\[2\\] must be a torch.nn.Module, got str$"),
    (lambda a, b, d: linear_barrier(a, b, d, loss_fn="mse"),
     "^loss_fn must be callable\\(outputs, targets\\) -> mean loss, got 'mse'$"),
    (lambda a, b, d: linear_barriers(a, b, d), "^data must be a non-empty mapping of names to data sets, got tuple$"),
    (lambda a, b, d: linear_barriers(a, b, {}), "^data must be a non-empty mapping of names to data sets, got dict$"),
    (lambda a, b, d: linear_barrier(a, b, d, align="both"),
     "^align must be False, True, 'weights' or 'activations', got 'both'$"),
])
def test_bad_arguments_are_refused_with_their_message(call, message):
    a, b = linear_net([[1.0, 0.0], [0.0, 0.0]]), linear_net([[0.0, 0.0], [2.0, 0.0]])
    with pytest.raises(ArgumentError, match=message):
        call(a, b, (X1, Y0))


def test_the_smallest_counts_are_accepted():
    a, b = linear_net([[1.0, 0.0], [0.0, 0.0]]), linear_net([[0.0, 0.0], [2.0, 0.0]])
    assert len(hull_losses([a, b], (X1, Y0), samples=1).losses) == 1
    assert len(loss_plane([a, b, linear_net([[0.0, 1.0], [0.0, 0.0]])], (X1, Y0), resolution=2).xs) == 2


def _bn_pair() -> tuple[nn.Sequential, nn.Sequential]:
    torch.manual_seed(1)
    a, b = (nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)) for _ in range(2))
    b[1].running_mean.fill_(2.0)
    return a, b


def _recalibrated_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, size: int) -> float:
    """net's loss on (x, y) after recalibrate_batchnorm on batches of ``size``."""
    net = copy.deepcopy(net)
    recalibrate_batchnorm(net, [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)])
    net.eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(net(x), y))


def test_hull_and_plane_recompute_batchnorm_on_batches_of_batch_size_or_keep_the_stored_statistics():
    """BatchNorm recomputed on batches of 2 (not one batch of 6) at every vertex, as recalibrate_batchnorm does; the
    stored statistics with bn_data=()."""
    a, b = _bn_pair()
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    want = (_recalibrated_loss(a, x, y, 2), _recalibrated_loss(b, x, y, 2))
    assert want != pytest.approx((_recalibrated_loss(a, x, y, 6), _recalibrated_loss(b, x, y, 6)), rel=1e-4)
    hull = hull_losses([a, b], (x, y), samples=1, batch_size=2)
    assert hull.vertex_losses == pytest.approx(want, rel=1e-5) and hull.bn == "recalibrated on 6 samples"
    stored = "stored BatchNorm statistics combined like the weights"
    assert hull_losses([a, b], (x, y), samples=1, bn_data=()).bn == stored
    c = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert loss_plane([a, b, c], (x, y), resolution=2, bn_data=()).bn == stored
    plane = loss_plane([a, b, c], (x, y), resolution=2, margin=0, batch_size=2)
    whole = loss_plane([a, b, c], (x, y), resolution=2, margin=0)
    assert plane.bn == "recalibrated on 6 samples" and plane.losses != whole.losses


def test_hull_and_plane_keep_the_masks():
    """The closed-form models with a second input column of weight 5 that the masks remove: masked, x = (1, 1)
    gives the logits of the closed-form tests again."""
    keep = {"weight": torch.tensor([[1.0, 0.0], [1.0, 0.0]])}
    x = torch.ones(1, 2)
    a, b = linear_net([[1.0, 5.0], [0.0, 0.0]]), linear_net([[0.0, 5.0], [2.0, 0.0]])
    hull = hull_losses([a, b], (x, Y0), samples=3, loss_fn=_bent, masks=keep)
    assert hull.losses == pytest.approx(tuple(8 * t * (1 - t) + t for _, t in hull.coefficients), abs=1e-5)
    models = [linear_net([[0.0, 5.0], [0.0, 0.0]]), a, b]
    plane = loss_plane(models, (x, Y0), resolution=3, margin=0, masks=keep)
    assert plane.xs == (0.0, 0.5, 1.0) and plane.ys == (0.0, 1.0, 2.0)
    for iy, y in enumerate(plane.ys):
        assert plane.losses[iy] == pytest.approx(tuple(math.log1p(math.exp(y - x)) for x in plane.xs), rel=1e-6)


def test_the_defaults_of_the_hull_and_the_plane():
    a, b = linear_net([[1.0, 0.0], [0.0, 0.0]]), linear_net([[0.0, 0.0], [2.0, 0.0]])
    hull = hull_losses([a, b], (X1, Y0))
    assert len(hull.coefficients) == 32 and hull.seed == 0
    assert hull.coefficients == tuple(tuple(float(c) for c in row) for row in simplex_samples(2, 32, 0))
    plane = loss_plane([linear_net([[0.0, 0.0], [0.0, 0.0]]), a, b], (X1, Y0))
    assert len(plane.xs) == len(plane.ys) == 21 and plane.margin == 0.2
    assert (plane.xs[0], plane.xs[-1], plane.ys[0], plane.ys[-1]) == pytest.approx((-0.2, 1.2, -0.4, 2.4))
    assert len(linear_barrier(a, b, (X1, Y0)).lambdas) == 11


def test_each_scan_shows_its_progress_bar(monkeypatch):
    import landscape.combination as combination

    bars = []

    class Bar:
        def __init__(self, **kwargs):
            bars.append(kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *args):
            return False

        def update(self, n=1):
            pass

    monkeypatch.setattr(combination, "tqdm", Bar)
    a, b = linear_net([[1.0, 0.0], [0.0, 0.0]]), linear_net([[0.0, 0.0], [2.0, 0.0]])
    linear_barrier(a, b, (X1, Y0), points=3, progress=True)
    hull_losses([a, b], (X1, Y0), samples=2, progress=True)
    loss_plane([linear_net([[0.0, 0.0], [0.0, 0.0]]), a, b], (X1, Y0), resolution=2, progress=False)
    hull_losses([a, b], (X1, Y0), samples=1)
    assert [(k["desc"], k["total"], k["disable"]) for k in bars] == [
        ("lambda", 3, False), ("hull", 4, False), ("plane", 4, True), ("hull", 3, None)]
    bars.clear()
    bn_a, bn_b = _bn_pair()
    linear_barrier(bn_a, bn_b, (torch.randn(4, 2), torch.tensor([0, 1, 0, 1])), points=2, progress=True)
    # the line, then the models' own losses (no bar)
    assert [(k["desc"], k["total"], k["disable"]) for k in bars] == [("lambda", 2, False), ("points", 2, True)]


def test_a_batchnorm_line_on_batches_of_batch_size_with_its_own_loss():
    """BatchNorm recomputed on batches of 2 at lambda = 0 and 1 (as recalibrate_batchnorm does on a and b), and the
    models' own losses under the given loss function."""
    a, b = _bn_pair()
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    line = linear_barrier(a, b, (x, y), points=2, batch_size=2)
    assert line.losses == pytest.approx((_recalibrated_loss(a, x, y, 2), _recalibrated_loss(b, x, y, 2)), rel=1e-5)
    assert line.losses != pytest.approx((_recalibrated_loss(a, x, y, 6), _recalibrated_loss(b, x, y, 6)), rel=1e-4)
    given = linear_barrier(a, b, (x, y), points=2, bn_data=(x, y), batch_size=2)  # an (X, y) pair cut alike
    assert given.losses == pytest.approx(line.losses, rel=1e-6)
    bent = linear_barrier(a, b, (x, y), points=2, loss_fn=_bent)
    with torch.no_grad():
        own = tuple(float(_bent(net.eval()(x), y)) for net in (a, b))
    assert bent.endpoint_losses == pytest.approx(own, rel=1e-6)


def test_a_masked_line_in_closed_form():
    """The closed-form line with a second input column of weight 5 that the masks remove."""
    keep = {"weight": torch.tensor([[1.0, 0.0], [1.0, 0.0]])}
    a, b = linear_net([[1.0, 5.0], [0.0, 0.0]]), linear_net([[0.0, 5.0], [2.0, 0.0]])
    line = linear_barrier(a, b, (torch.ones(1, 2), Y0), loss_fn=_bent, points=5, masks=keep)
    assert line.losses == pytest.approx((0.0, 1.75, 2.5, 2.25, 1.0), abs=1e-6) and line.barrier == pytest.approx(2.0)


def test_the_first_model_s_module_computes_every_point():
    """b only gives its weights: with a ReLU after a's layer and none after b's, every point has a's ReLU."""
    a = nn.Sequential(linear_net([[1.0]]), nn.ReLU())
    b = nn.Sequential(linear_net([[-1.0]]), nn.Identity())
    line = linear_barrier(a, b, (torch.ones(1, 1), torch.zeros(1, 1)), loss_fn=nn.functional.mse_loss, points=3)
    assert line.losses == (1.0, 0.0, 0.0)  # relu(1 - 2 lambda)^2


def test_linear_barriers_defaults_and_the_shortest_line():
    a, b = linear_net([[1.0, 0.0], [0.0, 0.0]]), linear_net([[0.0, 0.0], [2.0, 0.0]])
    assert len(linear_barriers(a, b, {"d": (X1, Y0)})["d"].lambdas) == 11
    two = linear_barrier(a, b, (X1, Y0), loss_fn=_bent, points=2)
    assert two.lambdas == (0.0, 1.0) and two.losses == pytest.approx((0.0, 1.0)) and two.barrier == 0.0
    with pytest.raises(ArgumentError, match="^points must be an integer >= 2, got 1$"):
        linear_barrier(a, b, (X1, Y0), points=1)


def test_messages_name_the_model_and_the_data_set():
    a, b = linear_net([[1.0, 0.0], [0.0, 0.0]]), linear_net([[0.0, 0.0], [2.0, 0.0]])
    with pytest.raises(ArgumentError, match="^models\\[1\\] holds torch.float16 weights \\('weight'\\)"):
        hull_losses([a, copy.deepcopy(b).half()], (X1, Y0))
    with pytest.raises(ArgumentError, match="^val is empty: it yielded no samples$"):
        linear_barriers(a, b, {"train": (X1, Y0), "val": []})
    with pytest.raises(ArgumentError, match="^val must be an iterable of \\(inputs, targets\\) batches or an "
                                            "\\(X, y\\) pair of tensors, got Tensor$"):
        linear_barriers(a, b, {"train": (X1, Y0), "val": torch.zeros(3)})


def test_an_aligned_line_keeps_the_union_of_the_masks():
    """The masks remove the second input column of both hidden units (a permutation of the units keeps that), so the
    aligned line is a's masked function throughout: a(1, 1) = 3 relu(1) + 0.5 relu(-2) = 3, a(-1, 1) = 1."""
    a = nn.Sequential(linear_net([[1.0, 5.0], [-2.0, 5.0]]), nn.ReLU(), linear_net([[3.0, 0.5]]))
    b = nn.Sequential(linear_net([[-2.0, 5.0], [1.0, 5.0]]), nn.ReLU(), linear_net([[0.5, 3.0]]))
    masks = {"0.weight": torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "2.weight": torch.ones(1, 2)}
    data = (torch.tensor([[1.0, 1.0], [-1.0, 1.0]]), torch.tensor([[3.0], [1.0]]))
    line = linear_barrier(a, b, data, loss_fn=nn.functional.mse_loss, points=3, align=True, masks=masks)
    assert line.losses == (0.0, 0.0, 0.0)
