"""The landscape library on models the toolkit does not know: a torchvision ResNet-18 and an MSE MLP."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

import landscape
from core.averaging import recalibrate_batchnorm
from landscape import combination, hull_losses, linear_barrier, loss_plane

ROOT = Path(__file__).resolve().parent.parent


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], bool]:
    return {k: v.clone() for k, v in model.state_dict().items()}, model.training


def _unchanged(model: nn.Module, snapshot: tuple[dict[str, torch.Tensor], bool]) -> bool:
    state, training = snapshot
    return model.training == training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def resnets() -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    a, b = resnet18(num_classes=10), resnet18(num_classes=10)
    x, y = torch.randn(12, 3, 32, 32), torch.randint(0, 10, (12,))
    for net in (a, b):  # running statistics that differ from the defaults, and train mode left on
        net.train()
        with torch.no_grad():
            net(x)
    return a, b, (x, y)


@pytest.fixture(scope="module")
def regression() -> tuple[nn.Module, nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(1)
    nets = [nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2)) for _ in range(2)]
    x = torch.randn(23, 5)
    y = torch.stack([x[:, 0] * x[:, 1], x[:, 2].sin()], 1)
    uneven = [(x[:10], y[:10]), (x[10:20], y[10:20]), (x[20:], y[20:])]  # 10, 10, 3 samples
    return nets[0], nets[1], uneven


def test_barrier_of_a_model_with_itself_is_zero_and_flat(resnets, regression):
    a, _, data = resnets
    before = _snapshot(a)
    result = linear_barrier(a, a, data, points=3, batch_size=5)
    assert result.barrier == 0.0 and result.barrier_max == 0.0 and len(set(result.losses)) == 1
    assert result.error_barrier == 0.0 and len(result.errors) == 3
    assert _unchanged(a, before)
    mlp, _, uneven = regression
    flat = linear_barrier(mlp, mlp, uneven, loss_fn=nn.MSELoss(), points=4)
    assert flat.barrier == 0.0 and len(set(flat.losses)) == 1 and flat.errors is None


def test_swapping_the_endpoints_reverses_the_curve(regression):
    a, b, data = regression
    ab = linear_barrier(a, b, data, loss_fn=nn.MSELoss(), points=5)
    ba = linear_barrier(b, a, data, loss_fn=nn.MSELoss(), points=5)
    assert ab.losses == pytest.approx(ba.losses[::-1], rel=1e-6)
    assert ab.barrier == pytest.approx(ba.barrier, rel=1e-6, abs=1e-9)


def test_endpoints_are_the_loss_by_hand_over_uneven_batches(regression):
    a, b, data = regression
    result = linear_barrier(a, b, data, loss_fn=nn.MSELoss(), points=3)
    x, y = torch.cat([x for x, _ in data]), torch.cat([y for _, y in data])
    with torch.no_grad():
        by_hand_a, by_hand_b = float(nn.MSELoss()(a(x), y)), float(nn.MSELoss()(b(x), y))
    # a mean over 23 samples, not over the three batch means (which would over-weight the last 3)
    assert result.losses[0] == pytest.approx(by_hand_a, rel=1e-6)
    assert result.losses[-1] == pytest.approx(by_hand_b, rel=1e-6)
    with torch.no_grad():
        batch_means = sum(float(nn.MSELoss()(a(xb), yb)) for xb, yb in data) / len(data)
    assert abs(by_hand_a - batch_means) > 1e-3, "the test data must tell the two averages apart"


def test_resnet_endpoints_with_stored_and_recomputed_batchnorm(resnets):
    a, b, (x, y) = resnets
    before = _snapshot(a), _snapshot(b)
    stored = linear_barrier(a, b, (x, y), points=2, bn_data=())
    reference = copy.deepcopy(a).eval()
    with torch.no_grad():
        own = float(nn.functional.cross_entropy(reference(x), y))
    assert stored.losses[0] == pytest.approx(own, rel=1e-5)
    assert stored.bn.startswith("stored BatchNorm")
    recal = linear_barrier(a, b, (x, y), points=2, bn_data=[(x[:8], y[:8])])
    recalibrate_batchnorm(reference, [(x[:8], y[:8])])
    with torch.no_grad():
        own = float(nn.functional.cross_entropy(reference(x), y))
    assert recal.losses[0] == pytest.approx(own, rel=1e-5) and recal.bn == "recalibrated on 8 samples"
    assert _unchanged(a, before[0]) and _unchanged(b, before[1])


def test_a_scan_recomputes_batchnorm_at_every_point_as_one_point_at_a_time_does():
    torch.manual_seed(4)
    nets = [nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(3)]
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    bn = [(x[:15], y[:15]), (x[15:30], y[15:30])]
    data = {"data": [(x[:25], y[:25]), (x[25:], y[25:])]}
    rows = [(1.0, 0.0, 0.0), (0.2, 0.5, 0.3), (0.0, 0.0, 1.0), (-0.5, 1.0, 0.5)]
    scan = combination.Combination(nets[0], [n.state_dict() for n in nets])
    reference = copy.deepcopy(nets[0])
    simple = []
    for c in rows:  # the simple path: load the point, recompute its statistics, evaluate
        reference.load_state_dict(scan.state(c))
        recalibrate_batchnorm(reference, bn)
        simple.append(combination.mean_loss(reference, data["data"]))
    listed = [p["data"] for p in scan.evaluate(rows, data, bn=bn, progress=False)]
    once = [p["data"] for p in scan.evaluate(rows, data, bn=(b for b in bn), progress=False)]  # a generator
    assert listed == simple and once == simple


def test_hull_of_identical_models_is_constant_and_vertices_are_the_models(resnets, regression):
    a, _, data = resnets
    before = _snapshot(a)
    hull = hull_losses([a, a, a], data, samples=3)
    assert len(set(hull.losses)) == 1 and set(hull.vertex_losses) == set(hull.losses)
    assert all(sum(c) == pytest.approx(1.0) and min(c) >= 0 for c in hull.coefficients)
    assert _unchanged(a, before)
    mlp_a, mlp_b, uneven = regression
    two = hull_losses([mlp_a, mlp_b], uneven, samples=5, loss_fn=nn.MSELoss(), seed=3)
    line = linear_barrier(mlp_a, mlp_b, uneven, loss_fn=nn.MSELoss(), points=2)
    assert two.vertex_losses == pytest.approx(line.losses, rel=1e-6)
    assert two.coefficients == hull_losses([mlp_a, mlp_b], uneven, samples=5, loss_fn=nn.MSELoss(),
                                           seed=3).coefficients


def test_plane_vertices_give_back_the_models(regression):
    a, b, data = regression
    torch.manual_seed(2)
    c = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2))
    plane = loss_plane([a, b, c], data, resolution=3, margin=0.0, loss_fn=nn.MSELoss())
    line = linear_barrier(a, b, data, loss_fn=nn.MSELoss(), points=2)
    assert plane.losses[0][0] == pytest.approx(line.losses[0], rel=1e-6)  # P_1 at the grid's corner
    assert plane.vertices[0] == (0.0, 0.0) and plane.vertices[1][1] == 0.0 and plane.errors is None


def test_masks_are_kept_by_every_point(regression):
    a, b, data = regression
    mask = (torch.rand_like(a[0].weight) > 0.5).float()
    line = linear_barrier(a, b, data, loss_fn=nn.MSELoss(), points=3, masks={"0.weight": mask})
    masked = copy.deepcopy(a)
    with torch.no_grad():
        masked[0].weight.mul_(mask)
    x, y = torch.cat([x for x, _ in data]), torch.cat([y for _, y in data])
    with torch.no_grad():
        assert line.losses[0] == pytest.approx(float(nn.MSELoss()(masked(x), y)), rel=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda a, b, d: linear_barrier(a, b, d, points=1), "points must be an integer >= 2"),
    (lambda a, b, d: linear_barrier(a, nn.Linear(5, 2), d), "is not the architecture of models[0]"),
    (lambda a, b, d: linear_barrier(a, "b", d), "models[1] must be a torch.nn.Module"),
    (lambda a, b, d: linear_barrier(a, b, []), "data is empty"),
    (lambda a, b, d: linear_barrier(a, b, torch.zeros(3)), "data must be an iterable"),
    (lambda a, b, d: linear_barrier(a, b, d, masks={"nope": torch.ones(1)}), "masks has an entry 'nope'"),
    (lambda a, b, d: linear_barrier(a, b, d, masks={"0.weight": torch.full_like(a[0].weight, 0.5)}),
     "must hold only 0 and 1"),
    (lambda a, b, d: linear_barrier(a, b, d, loss_fn=lambda o, t: (o - t) ** 2), "scalar tensor"),
    (lambda a, b, d: hull_losses([a], d), "at least 2 modules"),
    (lambda a, b, d: hull_losses([a, b], d, samples=0), "samples must be an integer >= 1"),
    (lambda a, b, d: loss_plane([a, b], d), "exactly 3 modules"),
    (lambda a, b, d: loss_plane([a, b, a], d, margin=float("nan")), "margin must be a finite number"),
    (lambda a, b, d: loss_plane([a, b, a], d, loss_fn=nn.MSELoss()), "collinear"),
    (lambda a, b, d: linear_barrier(a, b, d, loss_fn=lambda o, t: torch.tensor(float("nan"))), "not finite"),
])
def test_bad_arguments_raise_value_errors_naming_them(regression, call, message):
    a, b, data = regression
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        call(a, b, data)
    assert "--" not in str(err.value), "library errors speak Python, not flags"


def test_every_public_name_is_exported():
    """(Every module's examples run in tests/test_doctests.py.)"""
    for name in landscape.__all__:
        assert getattr(landscape, name) is not None


def test_from_landscape_import_align_is_the_function_and_the_command_still_runs():
    """``landscape.align`` is a command name (``python -m landscape.align``) and a library function
    (``from landscape import align``); the second must not become the command's module."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    check = ("import inspect; from landscape import align; import landscape.matching as m; "
             "assert inspect.isfunction(align) and align is m.align, align")
    subprocess.run([sys.executable, "-c", check], env=env, cwd=ROOT, check=True, capture_output=True)
    command = subprocess.run([sys.executable, "-m", "landscape.align", "--help"], env=env, cwd=ROOT,
                             capture_output=True, text=True)
    assert command.returncode == 0 and command.stdout.startswith("usage: python -m landscape.align"), command


def test_the_readme_example_runs(capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"<!-- own-model-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["barrier", "hull", "Hessian trace"]
    assert float(lines[2].split()[2]) > 0, "a trained classifier's loss has positive curvature"


def test_the_checkpoint_cli_equals_the_python_api_on_a_run(tiny_run):
    """``python -m landscape.barrier A B`` (the checkpoint layer) gives exactly the numbers of ``linear_barrier`` on
    the same two models and the same test batches."""
    from core.artifacts.checkpoint import build_model, load_checkpoint
    from landscape.tools.artifacts import EvalOptions, checkpoint_data
    from landscape.tools.barrier import checkpoint_barrier

    paths = [tiny_run / "cycle_01" / f"particle_{p:02d}.safetensors" for p in (0, 1)]
    cli = checkpoint_barrier(*paths, 4, EvalOptions(("test",), bn_recal=0))
    ckpts = [load_checkpoint(p) for p in paths]
    a, b = (build_model(c) for c in ckpts)
    data = checkpoint_data(ckpts[0], "cpu")
    test = list(data.eval_batches("test", int(ckpts[0].config["eval_batch_size"])))
    api = linear_barrier(a, b, test, points=4, bn_data=())
    assert api.losses == cli.curves["test"].loss and api.errors == cli.curves["test"].error
    assert api.barrier == cli.barrier["test"].loss and api.error_barrier == cli.barrier["test"].error


class _Scaled(nn.Linear):
    """A module whose state loads through its own hook: the direct copy must not be used for it."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@pytest.mark.parametrize("masked", [False, True])
def test_the_line_fast_path_is_the_general_formula_to_the_bit(resnets, masked):
    """Two models: theta_1 + c (theta_2 - theta_1) on flat vectors and a plain copy into the module give the
    very tensors of the per-tensor tensordot and load_state_dict; a custom loader falls back to load_state_dict."""
    a, b, _ = resnets
    states = [a.state_dict(), b.state_dict()]
    masks = {"fc.weight": (torch.rand_like(a.fc.weight) > 0.5).float()} if masked else None
    line = combination.Combination(a, states, masks)
    assert line._line is not None and line._targets is not None
    for c in (0.25, 1e-7, -0.5, 1.75):
        w = torch.tensor([c], dtype=torch.float64)
        general = {k: s[0] + torch.tensordot(w.to(s.dtype), s[1:] - s[0], dims=1) for k, s in line._stacks.items()}
        for key, mask in (masks or {}).items():
            general[key] = general[key] * mask
        fast = line.state((1 - c, c))
        assert all(torch.equal(fast[k], general[k]) for k in general)
        loaded = copy.deepcopy(a)
        loaded.load_state_dict(fast)
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in line.load((1 - c, c)).state_dict().items())
    custom = nn.Sequential(_Scaled(3, 2))
    assert combination.Combination(custom, [custom.state_dict()] * 2)._targets is None
    tied = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    tied[1].weight = tied[0].weight
    assert combination.Combination(tied, [tied.state_dict()] * 2)._targets is None
