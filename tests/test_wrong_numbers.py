"""Issue 27's silent wrong results, each a regression test: every weight matrix prunable (recurrent,
attention; embeddings on request), tied weights as one tensor, alignment that would do nothing, flags a
checkpoint would silently ignore, cycles past the last weight, the barrier's endpoints, non-finite results
and library arguments that gave raw torch errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import DATA_DIR
from torch import nn

import training
from core.errors import UserError
from core.pruning import coverage, dense_masks, prunable_names


class GRUNet(nn.Module):
    """A recurrent classifier of MNIST-1D: 10 steps of 4 values, a GRU, a linear head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.rnn = nn.GRU(4, 24, batch_first=True)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(x.shape[0], -1, 4))
        return self.head(out[:, -1])


class Tied(nn.Module):
    """Two layers sharing one weight tensor (as a language model ties its embedding and output layer)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(40, 40), nn.Linear(40, 40), nn.Linear(40, num_classes)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


class EmbeddingTiedToHead(nn.Module):
    """Tokens -> embedding -> mean -> linear head whose weight is the embedding's (a tied language model)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Embedding(num_classes, 8)
        self.head = nn.Linear(8, num_classes, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(1))


def test_every_weight_matrix_is_prunable():
    assert prunable_names(nn.LSTM(4, 8, num_layers=2, proj_size=3)) == [
        "weight_ih_l0", "weight_hh_l0", "weight_hr_l0", "weight_ih_l1", "weight_hh_l1", "weight_hr_l1"]
    assert prunable_names(nn.GRU(4, 8, bidirectional=True)) == [
        "weight_ih_l0", "weight_hh_l0", "weight_ih_l0_reverse", "weight_hh_l0_reverse"]
    assert prunable_names(nn.TransformerEncoderLayer(8, 2)) == [
        "self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.weight"]
    assert prunable_names(nn.MultiheadAttention(8, 2, kdim=4, vdim=4)) == [
        "q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"]
    net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    assert prunable_names(net) == ["1.weight"]
    assert prunable_names(net, embeddings=True) == ["0.weight", "1.weight"]


def test_conv_and_linear_selection_keeps_its_order():
    """The default run's masks (and so its checkpoints) depend on this order."""
    from core.models import build_model, model_spec

    net = build_model(model_spec("cnn1d", 10))
    assert prunable_names(net) == [n for n, m in net.named_modules() for n in [f"{n}.weight"]
                                   if isinstance(m, nn.Conv1d | nn.Linear)]


def test_tied_weights_are_one_weight_with_one_mask():
    assert prunable_names(Tied()) == ["a.weight", "head.weight"]
    tied = EmbeddingTiedToHead()
    assert prunable_names(tied) == ["embed.weight"]  # the output layer's weight, under its first name
    masks = dense_masks(tied)
    assert list(masks) == ["embed.weight"]
    cov = coverage(tied)
    assert (cov.pruned, cov.total, cov.dense) == (80, 80, {})


def test_coverage_names_the_dense_matrices_and_the_share():
    cov = coverage(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)))
    assert (cov.pruned, cov.total, cov.dense) == (8, 50, {"0.weight": 40})
    assert cov.describe() == ("not pruned: 0.weight (40 weights in matrices without a mask); the reported sparsity "
                              "covers 8 of the model's 50 weights (16.0%)")
    assert coverage(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)), [r"^0\."]).dense == {}


def _small_run(tmp_path, name, model_fn, **settings):
    settings = {"cycles": 2, "epochs": 1, "particles": 2, "rewind_epochs": 0, "batch_size": 64, **settings}
    return training.run_swamp(model_fn=model_fn, progress=False, data_dir=str(DATA_DIR), out=str(tmp_path / name),
                              **settings)


def test_recurrent_weights_are_pruned_in_a_run(tmp_path):
    from core.artifacts.checkpoint import load_checkpoint

    result = _small_run(tmp_path, "gru", GRUNet, engine="sequential")
    ckpt = load_checkpoint(tmp_path / "gru" / "cycle_01" / "average.safetensors", trust_code=True)
    assert sorted(ckpt.masks) == ["head.weight", "rnn.weight_hh_l0", "rnn.weight_ih_l0"]
    gru = ckpt.masks["rnn.weight_hh_l0"]
    assert 0.7 < float(gru.mean()) < 0.9  # the GRU is pruned, not only the head
    assert bool((ckpt.state["rnn.weight_hh_l0"][gru == 0] == 0).all())
    assert result.cycles[1]["density"] == pytest.approx(0.8, abs=1e-3)


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_tied_weights_train_as_one_tensor(tmp_path, engine):
    from core.artifacts.checkpoint import load_checkpoint

    _small_run(tmp_path, engine, Tied, engine=engine)
    for name in ("particle_00", "particle_01", "average"):
        ckpt = load_checkpoint(tmp_path / engine / "cycle_01" / f"{name}.safetensors", trust_code=True)
        assert sorted(ckpt.masks) == ["a.weight", "head.weight"]
        assert torch.equal(ckpt.state["a.weight"], ckpt.state["b.weight"]), name
    if engine == "vectorized":  # the stacked tied layer trains as the sequential one does
        seq = tmp_path / "seq"
        _small_run(tmp_path, "seq", Tied, engine="sequential")
        for name in ("particle_00", "average"):
            a = load_checkpoint(seq / "cycle_01" / f"{name}.safetensors", trust_code=True).state
            b = load_checkpoint(tmp_path / engine / "cycle_01" / f"{name}.safetensors", trust_code=True).state
            for key in a:
                torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


def test_alignment_refuses_weights_outside_every_group_and_tied_weights():
    from landscape.batches import ArgumentError
    from landscape.matching import activation_matching, weight_matching

    with pytest.raises(ArgumentError, match="GRUNet has no group of hidden units, e.g. 'rnn.weight_ih_l0' of GRU"):
        weight_matching(GRUNet(), GRUNet())
    with pytest.raises(ArgumentError, match="no group of hidden units"):
        activation_matching(GRUNet(), GRUNet(), (torch.randn(8, 40), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(ArgumentError, match="'a.weight' and 'b.weight' are one shared tensor"):
        weight_matching(Tied(), Tied())

    class Embedded(nn.Module):  # an embedding before an MLP: the MLP aligns, the embedding would not
        def __init__(self):
            super().__init__()
            self.embed, self.hidden, self.out = nn.Embedding(5, 4), nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, tokens):
            return self.out(torch.relu(self.hidden(self.embed(tokens).mean(1))))

    with pytest.raises(ArgumentError, match=r"weight matrices outside every group \(20 of 68 weights\), e.g. "
                                            "'embed.weight' of Embedding"):
        weight_matching(Embedded(), Embedded())


def test_barrier_reports_the_endpoints_own_losses_beside_the_recomputed_ones():
    from landscape.combination import mean_loss
    from landscape.connectivity import linear_barrier

    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)) for _ in range(2)]
    X, y = torch.randn(256, 6), torch.randint(0, 3, (256,))
    for net in nets:  # stored statistics that recomputation on X changes
        net.train()
        net(X[:32] * 3 + 1)
    result = linear_barrier(*nets, (X, y), points=3)
    own = [mean_loss(net, [(X, y)]) for net in nets]
    assert result.endpoint_losses == (own[0].loss, own[1].loss)
    assert result.endpoint_errors == (1 - own[0].acc, 1 - own[1].acc)
    assert abs(result.losses[0] - own[0].loss) > 1e-3  # the curve's end is a recalibrated, not a as it is
    kept = linear_barrier(*nets, (X, y), points=3, bn_data=())
    assert kept.endpoint_losses == (kept.losses[0], kept.losses[-1]) == (own[0].loss, own[1].loss)
    assert result.to_json()["endpoint_losses"] == list(result.endpoint_losses)


def test_hull_vertices_are_evaluated_as_the_samples_are():
    """The hull's docstring called vertex_losses the models' own: with BatchNorm recomputed they are the vertices
    recomputed like every sample (what the hull's losses compare with), the models' own only when nothing is."""
    from landscape.combination import mean_loss
    from landscape.connectivity import hull_losses, linear_barrier

    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)) for _ in range(2)]
    X, y = torch.randn(256, 6), torch.randint(0, 3, (256,))
    for net in nets:
        net.train()
        net(X[:32] * 3 + 1)
    own = tuple(mean_loss(net, [(X, y)]).loss for net in nets)
    line = linear_barrier(*nets, (X, y), points=2)
    assert hull_losses(nets, (X, y), samples=2).vertex_losses == (line.losses[0], line.losses[-1]) != own
    assert hull_losses(nets, (X, y), samples=2, bn_data=()).vertex_losses == own


def test_barrier_tool_writes_the_checkpoints_own_losses(tiny_run, tmp_path, capsys):
    from landscape.tools.barrier import main as barrier_main

    a, b = (tiny_run / "cycle_00" / f"particle_0{p}.safetensors" for p in (0, 1))
    args = [str(a), str(b), "--points", "2", "--split", "test", "--no-progress", "--data-dir", str(DATA_DIR)]
    assert barrier_main([*args, "--json", str(tmp_path / "r.json")]) == 0
    assert "A and B as stored (their own BatchNorm statistics" in capsys.readouterr().out
    assert barrier_main([*args, "--bn-recal", "0", "--json", str(tmp_path / "s.json")]) == 0
    import json

    recomputed, stored = (json.loads((tmp_path / n).read_text()) for n in ("r.json", "s.json"))
    assert recomputed["endpoints"] == stored["endpoints"]  # as stored, whatever the curve does
    assert stored["endpoints"]["test"] == {"loss": [stored["test"]["loss"][0], stored["test"]["loss"][-1]],
                                           "acc": [stored["test"]["acc"][0], stored["test"]["acc"][-1]]}
    assert recomputed["test"]["loss"][0] != recomputed["endpoints"]["test"]["loss"][0]


def _huge_mlp(path):
    """A plain state_dict of the zoo MLP whose finite weights overflow the logits to a NaN loss."""
    from core.models import build_model, model_spec

    state = {k: v * 1e37 if v.dim() > 1 else v for k, v in build_model(model_spec("mlp", 10)).state_dict().items()}
    torch.save(state, path)
    return str(path)


def test_non_finite_results_are_one_line_and_exit_2(tmp_path, capsys):
    from core.errors import run_cli
    from landscape.tools.barrier import main as barrier_main
    from landscape.tools.hessian import main as hessian_main

    pt = _huge_mlp(tmp_path / "huge.pt")
    common = ["--model", "mlp", "--dataset", "mnist1d", "--data-dir", str(DATA_DIR), "--no-progress"]
    out = tmp_path / "b.json"
    assert run_cli(barrier_main, [pt, pt, "--points", "2", *common, "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the ") and "loss at coefficients [1.0, 0.0] is not finite (nan)" in err
    assert "\n" not in err and not out.exists()
    assert run_cli(hessian_main, [pt, "--probes", "2", "--samples", "8", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: the loss the Hessian is taken of is not finite (nan); check the models' weights, the data "
                   "and loss_fn")


def test_non_finite_library_results_raise_argument_error_alike():
    from landscape.batches import ArgumentError
    from landscape.connectivity import linear_barrier
    from landscape.curvature import hessian_trace, top_eigenvalue

    net = nn.Linear(4, 3)
    with torch.no_grad():
        net.weight.fill_(float("inf"))
    data = (torch.randn(16, 4), torch.randint(0, 3, (16,)))
    for call in (lambda: linear_barrier(net, net, data, points=2), lambda: hessian_trace(net, data, probes=4),
                 lambda: top_eigenvalue(net, data, steps=3)):
        with pytest.raises(ArgumentError, match=r"is not finite \(nan\)"):
            call()
    with pytest.raises(ArgumentError, match=r"probes must be >= 2 \(one product gives no standard error\)"):
        hessian_trace(nn.Linear(4, 3), data, probes=1)


def test_every_library_result_at_an_infinite_loss_is_refused():
    """Finite weights whose logits overflow: the loss is infinite, the Hessian's products underflow to 0. The
    trace, eigenvalue and normalised trace were 0.0, mean_loss returned inf and the normalised trace of NaN
    weights NaN; alignment of NaN weights returned a permutation. Each is now an ArgumentError."""
    from landscape import HessianOperator, mean_loss, normalized_trace, weight_matching
    from landscape.batches import ArgumentError
    from landscape.curvature import hessian_trace, top_eigenvalue

    huge, nan = nn.Linear(4, 3), nn.Linear(4, 3)
    with torch.no_grad():
        huge.weight.mul_(1e38)
        nan.weight[0, 0] = float("nan")
    data = (torch.randn(16, 4), torch.randint(0, 3, (16,)))
    for model, value in ((huge, "inf"), (nan, "nan")):
        calls = (lambda m: hessian_trace(m, data, probes=2), lambda m: top_eigenvalue(m, data, steps=2),
                 lambda m: normalized_trace(m, data, probes=2), lambda m: HessianOperator(m, data) @ torch.ones(15))
        for call in calls:
            with pytest.raises(ArgumentError, match=rf"^the loss the Hessian is taken of is not finite \({value}\)"):
                call(model)
        with pytest.raises(ArgumentError, match=rf"^the data loss of model is not finite \({value}\)"):
            mean_loss(model, [data])
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    bad = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        bad[2].weight[0, 0] = float("inf")
    with pytest.raises(ArgumentError, match="^other's '2.weight' is not finite"):
        weight_matching(mlp, bad)
    assert math.isfinite(hessian_trace(mlp, data, probes=2).estimate)  # a finite loss still gives its number


def test_cycles_past_the_floor_are_refused_before_anything_is_written(tmp_path, capsys):
    from core.errors import run_cli
    from training.swamp import main as swamp_main

    out = tmp_path / "run"
    args = ["--cycles", "60", "--prune-ratio", "0.5", "--no-progress", "--data-dir", str(DATA_DIR), "--out", str(out)]
    assert run_cli(swamp_main, args) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --cycles 60 --prune-ratio 0.5: cycle 13 would keep 3 of 24,864 prunable weights, fewer "
                   "than one per pruned tensor (5), so a layer would have none; use at most --cycles 13")
    assert run_cli(swamp_main, [*args, "--prune-method", "layerwise"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --cycles 60 --prune-ratio 0.5: cycle 14 would prune no weight "
                                               "(5 left, too few for the ratio to remove one); use at most --cycles 14")
    assert not out.exists()


def test_the_schedule_check_counts_what_the_masks_keep():
    """kept_per_cycle is the masks' own count (round(P x kept) removed per cycle, per layer with layerwise)."""
    from core.pruning import density, kept_per_cycle, next_masks

    torch.manual_seed(0)
    weights = {"a": torch.randn(7, 5), "b": torch.randn(13)}
    for method in ("global", "layerwise"):
        masks, counts = {k: torch.ones_like(v) for k, v in weights.items()}, []
        for _ in range(6):
            counts.append(int(sum(m.sum() for m in masks.values())))
            masks = next_masks(method, weights, masks, 0.3, torch.Generator().manual_seed(0))
        assert counts == kept_per_cycle([35, 13], 0.3, 6, layerwise=method == "layerwise"), method
        assert density(masks) < 1


FACTORY = '''
import torch
from core.data import load_mnist1d, mnist1d_spec


def load(data_dir):
    data = load_mnist1d(mnist1d_spec(data_dir))
    train = torch.utils.data.TensorDataset(data.x_train[:256], data.y_train[:256])
    test = torch.utils.data.TensorDataset(data.x_test[:128], data.y_test[:128])
    train.num_classes = test.num_classes = 10
    return train, test
'''


def test_dataset_flag_is_honoured_for_in_memory_data_and_refused_elsewhere(tmp_path, monkeypatch, capsys, tiny_run):
    import importlib
    import json
    import sys

    from core.errors import run_cli
    from landscape.tools.barrier import main as barrier_main
    from landscape.tools.hessian import main as hessian_main

    name = f"wnfactory_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        train, test = importlib.import_module(name).load(str(DATA_DIR))
        training.run_swamp(model="mlp", train_set=train, test_set=test, cycles=1, epochs=1, particles=2,
                           rewind_epochs=0, batch_size=64, progress=False, out=str(tmp_path / "run"))
        a, b = (str(tmp_path / "run" / "cycle_00" / f"particle_0{p}.safetensors") for p in (0, 1))
        common = ["--points", "2", "--split", "test", "--no-progress", "--data-dir", str(DATA_DIR)]
        assert run_cli(barrier_main, [a, b, *common]) == 2  # the data were Python objects: no name reloads them
        assert "handed to training.run_swamp as Python objects" in capsys.readouterr().err
        out = tmp_path / "b.json"
        assert run_cli(barrier_main, [a, b, *common, "--dataset", f"{name}:load", "--json", str(out)]) == 0
        from core.artifacts.checkpoint import build_model, load_checkpoint
        from landscape.combination import mean_loss

        net = build_model(load_checkpoint(a))
        assert json.loads(out.read_text())["test"]["loss"][0] == pytest.approx(mean_loss(net, [(test.tensors[0],
                                                                                test.tensors[1])]).loss, rel=1e-6)
        # the run's tools take --dataset as the files do (it once suggested --dataset, then refused it with --run)
        capsys.readouterr()
        run = ["--run", str(tmp_path / "run"), "--no-progress", "--data-dir", str(DATA_DIR)]
        assert run_cli(barrier_main, [*run, "--cycle", "0", "--points", "2", "--split", "test",
                                      "--dataset", f"{name}:load", "--json", str(tmp_path / "r.json")]) == 0
        assert json.loads((tmp_path / "r.json").read_text())["pairs"][0]["test"]["loss"][0] == pytest.approx(
            json.loads(out.read_text())["test"]["loss"][0], rel=1e-6)
        assert run_cli(hessian_main, [*run, "--dataset", f"{name}:load", "--probes", "2"]) == 0
        assert run_cli(hessian_main, run) == 2
        assert "handed to training.run_swamp as Python objects" in capsys.readouterr().err
    finally:
        sys.modules.pop(name, None)
    capsys.readouterr()
    ckpt = str(tiny_run / "cycle_00" / "average.safetensors")
    assert run_cli(barrier_main, [ckpt, ckpt, *common, "--dataset", "other.mod:load"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --dataset other.mod:load: {ckpt} records its data set (mnist1d), which the tools use; --dataset "
        "describes plain .pt state_dicts (and data handed to run_swamp as Python objects), leave it out")
    assert run_cli(barrier_main, [ckpt, ckpt, *common, "--model", "mlp"]) == 2
    assert "--model mlp: " in capsys.readouterr().err
    assert run_cli(barrier_main, [ckpt, ckpt, *common, "--dataset", "mnist1d", "--model", "cnn1d"]) == 0  # as recorded
    capsys.readouterr()
    assert run_cli(barrier_main, ["--run", str(tiny_run), "--cycle", "0", *common, "--dataset", "x.y:z"]) == 2
    assert capsys.readouterr().err.strip().startswith(
        f"error: --dataset x.y:z: {tiny_run / 'cycle_00' / 'particle_00.safetensors'} records its data set (mnist1d)")
    assert run_cli(hessian_main, ["--run", str(tiny_run), "--model", "mlp", "--no-progress"]) == 2
    assert "is a SWAMP checkpoint of the model" in capsys.readouterr().err


def _mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_library_refuses_models_targets_and_sizes_it_cannot_measure():
    from landscape.batches import ArgumentError
    from landscape.combination import mean_loss
    from landscape.connectivity import hull_losses, linear_barrier, loss_plane
    from landscape.curvature import hessian_trace, top_eigenvalue
    from landscape.matching import activation_matching, weight_matching

    X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    with torch.device("meta"):
        meta = _mlp()
    half = _mlp().half()
    refused = {
        "models\\[0\\] has no weight values: '0.weight' is on the meta device":
            lambda: linear_barrier(meta, meta, (X, y)),
        "^model has no weight values": lambda: hessian_trace(meta, (X, y), probes=2),
        "^reference has no weight values": lambda: weight_matching(meta, meta),
        "^model has no weight values: '0.weight'": lambda: mean_loss(meta, [(X, y)]),
        "models\\[0\\] holds torch.float16 weights \\('0.weight'\\); .* pass models\\[0\\].float\\(\\)":
            lambda: linear_barrier(half, half, (X, y)),
        "^model holds torch.float16 weights": lambda: top_eigenvalue(half, (X, y), steps=2),
        "^reference holds torch.float16": lambda: activation_matching(half, half, (X, y)),
        "loss_fn: the default cross-entropy needs integer class targets, got torch.float32 targets":
            lambda: linear_barrier(_mlp(), _mlp(), (X, y.float())),
        "loss_fn: target class 7 is outside the model's 3 classes \\[0, 3\\)":
            lambda: hessian_trace(_mlp(), (X, y + 5), probes=2),
        "loss_fn: target class -[0-9] is outside": lambda: mean_loss(_mlp(), [(X, y - 5)]),
        "needs targets of shape \\(32,\\) for outputs of shape \\(32, 3\\), got \\(32, 1\\)":
            lambda: linear_barrier(_mlp(), _mlp(), (X, y[:, None])),
        "points must be at most 10,001": lambda: linear_barrier(_mlp(), _mlp(), (X, y), points=10**12),
        "samples must be at most 100,000": lambda: hull_losses([_mlp(), _mlp()], (X, y), samples=10**12),
        "resolution must be at most 1,001": lambda: loss_plane([_mlp(), _mlp(), _mlp()], (X, y), resolution=10**6),
        "probes must be at most 10,000": lambda: hessian_trace(_mlp(), (X, y), probes=10**12),
    }
    for message, call in refused.items():
        with pytest.raises(ArgumentError, match=message):
            call()
    # a sequence model's (N, classes, T) logits with (N, T) targets remain the default loss's business
    seq = nn.Conv1d(4, 3, 1)
    assert mean_loss(seq, [(torch.randn(8, 4, 5), torch.randint(0, 3, (8, 5)))]).loss > 0


class Net(nn.Sequential):
    def __init__(self, num_classes: int = 10):
        super().__init__(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, num_classes))


def test_run_swamp_refuses_a_model_fn_and_another_model(tmp_path):
    for model in ("mlp", "torchvision:resnet18", "tests.elsewhere:Other"):
        with pytest.raises(ValueError, match=f"model_fn and model='{model}' name two models"):
            training.run_swamp(model_fn=Net, model=model, out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="train_set and dataset='mnist1d' name two data sets"):
        training.run_swamp(train_set=[], test_set=[], dataset="mnist1d", out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    from training.api import resolve_run_config

    assert resolve_run_config(model_fn=Net, model=f"{__name__}:Net").model == f"{__name__}:Net"  # its own name


def test_vectorized_engine_refuses_recurrent_layers_up_front(tmp_path):
    with pytest.raises(UserError, match="--engine vectorized cannot stack the particles of --model "
                                                        ".*GRUNet: torch.func.vmap does not batch its GRU layers"):
        _small_run(tmp_path, "gru", GRUNet, engine="vectorized")
    assert not (tmp_path / "gru").exists()


class WithOwnMatrix(nn.Module):
    """A linear layer followed by the model's own learned matrix, which no mask covers."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(40, num_classes)
        self.mix = nn.Parameter(torch.eye(num_classes))

    def forward(self, x):
        return self.fc(x) @ self.mix


def test_a_run_names_the_weights_its_sparsity_leaves_out_before_training(tmp_path, capsys):
    _small_run(tmp_path, "own", WithOwnMatrix, cycles=1)
    err = capsys.readouterr().err
    assert ("note: not pruned: mix (100 weights in matrices without a mask); the reported sparsity covers 400 of the "
            "model's 510 weights (78.4%)") in err
    _small_run(tmp_path, "gru", GRUNet, cycles=1, engine="sequential")
    assert "note:" not in capsys.readouterr().err  # every matrix of the GRU model has a mask
