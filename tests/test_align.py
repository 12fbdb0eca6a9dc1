"""landscape.tools.align and landscape.permutations: permutation alignment (Git Re-Basin, Ainsworth et al. 2023)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors import safe_open
from torch import nn

from core.artifacts.checkpoint import build_model as checkpoint_model
from core.artifacts.checkpoint import load_checkpoint, save_checkpoint
from core.data import load_mnist1d, mnist1d_spec
from core.errors import run_cli
from core.models import REGISTRY, build_model, model_spec
from landscape import linear_barrier
from landscape.matching import activation_matching, weight_matching
from landscape.permutations import permutation_spec, permute_state
from landscape.tools.align import align_checkpoints, format_alignment, main
from landscape.tools.barrier import main as barrier_main

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

# name, model kwargs, input shape: every architecture of the toolkit at a small width
ARCHITECTURES = {
    "mlp": ({"hidden": 16}, (40,)),
    "cnn1d": ({"channels": 4}, (40,)),
    "resnet20": ({"width": 4}, (3, 16, 16)),
    "wrn10x1": ({}, (3, 16, 16)),
    "wrn10x2": ({}, (3, 16, 16)),
    "vgg11": ({}, (3, 32, 32)),
    "resnet18": ({}, (3, 8, 8)),
}


def make(name: str, seed: int) -> nn.Module:
    """A registry model with random BatchNorm parameters and statistics (so that BN permutations matter)."""
    torch.manual_seed(seed)
    kwargs, _ = ARCHITECTURES.get(name, ({}, None))
    model = build_model(model_spec(name, 10, kwargs)) if name != "torchvision_resnet18" else \
        torchvision.models.resnet18(num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data.normal_()
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def shuffled(model: nn.Module, seed: int) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of ``model`` with the units of every group in a random order, and those orders."""
    spec = permutation_spec(model)
    g = torch.Generator().manual_seed(seed)
    perms = {group.name: torch.randperm(group.size, generator=g) for group in spec.groups}
    copy_ = copy.deepcopy(model)
    copy_.load_state_dict(permute_state(model.state_dict(), spec, perms))
    return copy_, perms


def inputs(name: str, n: int = 4) -> torch.Tensor:
    shape = (3, 32, 32) if name == "torchvision_resnet18" else ARCHITECTURES[name][1]
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", [*ARCHITECTURES, "torchvision_resnet18"])
def test_a_shuffled_copy_and_an_aligned_model_compute_the_same_outputs(name):
    model, other = make(name, 0), make(name, 1)
    copy_, _ = shuffled(model, 0)
    x = inputs(name)
    with torch.no_grad():
        torch.testing.assert_close(copy_(x), model(x), atol=1e-5, rtol=1e-5)
        assert any(not torch.equal(copy_.state_dict()[k], v) for k, v in model.state_dict().items())
        aligned = weight_matching(model, other, max_iter=2)
        torch.testing.assert_close(aligned.model(x), other(x), atol=1e-5, rtol=1e-5)
    assert aligned.objectives[-1] >= aligned.objectives[0]


def test_torchvision_resnet50_graph_is_understood():
    model = torchvision.models.resnet50(num_classes=10).eval()
    copy_, _ = shuffled(model, 0)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(copy_(x), model(x), atol=1e-5, rtol=1e-5)
    # the stem, a stream per stage, two inner groups per block
    assert len(permutation_spec(model).groups) == 1 + 4 + 2 * 16


@pytest.mark.parametrize("name", ["mlp", "cnn1d", "resnet20"])
def test_weight_matching_recovers_the_inverse_permutations_and_removes_the_barrier(name):
    model = make(name, 0)
    copy_, perms = shuffled(model, 1)
    result = weight_matching(model, copy_)
    for group, perm in perms.items():
        assert result.permutations[group] == tuple(torch.argsort(perm).tolist())
    for key, value in model.state_dict().items():
        assert torch.equal(result.model.state_dict()[key], value)
    # the loss of a point is its distance to the reference's function: 0 at both ends
    x = inputs(name, 64)
    with torch.no_grad():
        data = (x, model(x))
    raw = linear_barrier(model, copy_, data, loss_fn=nn.MSELoss(), points=5, bn_data=())
    aligned = linear_barrier(model, copy_, data, loss_fn=nn.MSELoss(), points=5, bn_data=(), align=True)
    assert raw.barrier > 1e-3
    assert aligned.barrier == pytest.approx(0.0, abs=1e-9)
    assert aligned.alignment.permutations == result.permutations


def test_activation_matching_recovers_a_shuffled_mlp():
    model = make("mlp", 0)
    copy_, perms = shuffled(model, 2)
    result = activation_matching(model, copy_, (torch.randn(512, 40), torch.zeros(512)))
    assert all(result.permutations[g] == tuple(torch.argsort(p).tolist()) for g, p in perms.items())
    assert result.objectives[-1] > result.objectives[0] and result.iterations == 1


def test_masks_are_permuted_with_their_weights_and_inputs_are_untouched():
    reference, other = make("cnn1d", 0), make("cnn1d", 1).train()
    g = torch.Generator().manual_seed(3)
    masks = {k: (torch.rand(p.shape, generator=g) < 0.5).float() for k, p in other.named_parameters()
             if k.endswith("weight") and p.dim() > 1}
    with torch.no_grad():
        for k, m in masks.items():
            other.get_parameter(k).mul_(m)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (reference, other)]
    result = weight_matching(reference, other, masks=masks)
    for m, state in zip((reference, other), before, strict=True):
        assert all(torch.equal(m.state_dict()[k], v) for k, v in state.items())
    assert other.training and not reference.training and result.model.training
    for k, mask in result.masks.items():
        assert set(mask.unique().tolist()) <= {0.0, 1.0} and mask.sum() == masks[k].sum()
        assert bool((result.model.get_parameter(k)[mask == 0] == 0).all())
    assert any(not torch.equal(result.masks[k], masks[k]) for k in masks)


class CatNet(nn.Module):
    """Two branches joined by torch.cat and fed to another layer: not supported."""

    def __init__(self, num_classes: int = 10, length: int = 40):
        super().__init__()
        self.left, self.right = nn.Linear(length, 8), nn.Linear(length, 8)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.left(x), self.right(x)], 1).relu())


def test_an_unsupported_graph_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^cannot align: node 'cat' calls torch\.cat, which alignment does not"):
        weight_matching(CatNet(), CatNet())
    # the same operation on tensors that are never permuted (after the output layer) is fine
    assert [g.name for g in permutation_spec(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3),
                                                           nn.Softmax(1))).groups] == ["0"]


def checkpoint(path: Path, name: str, seed: int, **kwargs) -> Path:
    torch.manual_seed(seed)
    spec = model_spec(name, 10, kwargs)
    model = build_model(spec)
    masks = {k: torch.ones_like(p) for k, p in model.named_parameters() if k.endswith("weight")}
    save_checkpoint(path, model.state_dict(), masks, kind="particle", model=spec,
                    dataset=mnist1d_spec(str(DATA_DIR)), config={}, cycle=0, particle=seed)
    return path


def test_cli_writes_what_the_library_computes_and_refuses_to_replace_inputs(tmp_path, capsys):
    ref, other = checkpoint(tmp_path / "a.safetensors", "mlp", 0, hidden=16), \
        checkpoint(tmp_path / "b.safetensors", "mlp", 1, hidden=16)
    out = tmp_path / "aligned.safetensors"
    for _ in range(2):  # the second run replaces its own earlier output
        assert run_cli(main, [str(ref), str(other), "--out", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    expected = align_checkpoints(str(ref), str(other), seed=3)
    assert format_alignment(expected.alignment) in printed
    written = load_checkpoint(out)
    assert written.kind == "particle" and written.particle == 1 and written.model == expected.checkpoint.model
    assert all(torch.equal(written.state[k], v) for k, v in expected.checkpoint.state.items())
    assert set(written.masks) == set(expected.checkpoint.masks)
    with safe_open(str(out), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["aligned_to"] == str(ref) and json.loads(meta["alignment"])["method"] == "weights"
    for bad in ([str(ref), str(other), "--out", str(other)], [str(ref), str(other), "--out", str(tmp_path)],
                [str(ref), str(other), "--out", str(tmp_path / "x"), "--max-iter", "0"]):
        assert run_cli(main, bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    assert run_cli(main, [str(ref), str(other), "--out", str(note)]) == 2 and note.read_text() == "mine"


def test_cli_refuses_an_unsupported_model_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(REGISTRY, "mlp", CatNet)
    ref, other = checkpoint(tmp_path / "a.safetensors", "mlp", 0), checkpoint(tmp_path / "b.safetensors", "mlp", 1)
    assert run_cli(main, [str(ref), str(other), "--out", str(tmp_path / "c.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err == "error: cannot align: node 'cat' calls torch.cat, which alignment does not support\n"
    assert not (tmp_path / "c.safetensors").exists()


def test_barrier_cli_align_adds_the_aligned_line_and_keeps_the_raw_keys(tmp_path, capsys):
    ref, other = checkpoint(tmp_path / "a.safetensors", "mlp", 0, hidden=16), \
        checkpoint(tmp_path / "b.safetensors", "mlp", 1, hidden=16)
    common = [str(ref), str(other), "--points", "3", "--split", "test", "--data-dir", str(DATA_DIR)]
    assert run_cli(barrier_main, [*common, "--json", str(tmp_path / "raw.json")]) == 0
    assert run_cli(barrier_main, [*common, "--align", "--json", str(tmp_path / "aligned.json")]) == 0
    printed = capsys.readouterr().out
    raw, both = (json.loads((tmp_path / f).read_text()) for f in ("raw.json", "aligned.json"))
    assert "aligned" not in raw and set(both) == set(raw) | {"aligned"}
    assert both["barrier"] == raw["barrier"] and both["test"] == raw["test"]
    assert both["aligned"]["alignment"]["method"] == "weights"
    assert "B aligned to A" in printed and "aligned barrier (Frankle et al. 2020): test loss" in printed


def test_two_trained_mnist1d_mlps_have_a_lower_barrier_once_aligned():
    data = load_mnist1d(mnist1d_spec(str(DATA_DIR)))

    def trained(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        net = build_model(model_spec("mlp", 10))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(3):
            order = torch.randperm(len(data.y_train))
            for start in range(0, len(order), 100):
                idx = order[start:start + 100]
                opt.zero_grad()
                nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx]).backward()
                opt.step()
        return net

    a, b = trained(0), trained(1)
    test = (data.x_test, data.y_test)
    raw = linear_barrier(a, b, test, points=5)
    weights = linear_barrier(a, b, test, points=5, align=True)
    activations = linear_barrier(a, b, test, points=5, align="activations")
    assert weights.barrier < 0.5 * raw.barrier and activations.barrier < raw.barrier


def test_bad_arguments_raise_value_errors_naming_them():
    a, data = nn.Linear(2, 3), (torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
    for call, message in ((lambda: weight_matching(a, nn.Linear(3, 3)), "not one architecture: tensor 'weight'"),
                          (lambda: weight_matching(a, a, max_iter=0), "max_iter must be an integer >= 1"),
                          (lambda: weight_matching(a, a, masks={"bias": torch.full((3,), 2.0)}), "only 0 and 1"),
                          (lambda: linear_barrier(a, a, data, align="nearest"), "align must be")):
        with pytest.raises(ValueError, match=message):
            call()


def test_cli_json_has_what_it_printed_and_is_guarded_like_the_other_tools(tmp_path, capsys):
    ref, other = checkpoint(tmp_path / "a.safetensors", "mlp", 0, hidden=16), \
        checkpoint(tmp_path / "b.safetensors", "mlp", 1, hidden=16)
    out, report = tmp_path / "aligned.safetensors", tmp_path / "alignment.json"
    for _ in range(2):  # a rerun replaces its own JSON
        assert run_cli(main, [str(ref), str(other), "--out", str(out), "--seed", "3", "--json", str(report)]) == 0
    expected = align_checkpoints(str(ref), str(other), seed=3).alignment
    written = json.loads(report.read_text())
    assert written["reference"] == str(ref) and written["other"] == str(other) and written["out"] == str(out)
    assert written["alignment"] == json.loads(json.dumps(expected.to_json()))
    assert written["groups"] == len(expected.spec.groups) and written["seconds"] > 0
    assert f"wrote {report}" in capsys.readouterr().out
    note = tmp_path / "notes.json"
    note.write_text('{"mine": 1}')
    for bad, message in (([str(ref), str(other), "--out", str(tmp_path / "c.safetensors"), "--json", str(note)],
                          "is not an earlier JSON output of this tool"),
                         ([str(ref), str(other), "--out", str(tmp_path / "c.safetensors"), "--json", str(ref)],
                          "outputs never replace inputs"),
                         ([str(ref), str(other), "--out", str(out), "--json", str(out)], "name the same file")):
        assert run_cli(main, bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --") and err.count("\n") == 1 and message in err, err
    assert note.read_text() == '{"mine": 1}' and not (tmp_path / "c.safetensors").exists()


def test_cli_reads_a_plain_state_dict_reference_described_by_model_and_dataset(tmp_path, capsys):
    torch.manual_seed(0)
    plain = tmp_path / "ref.pt"
    torch.save(build_model(model_spec("mlp", 10)).state_dict(), plain)
    other = checkpoint(tmp_path / "b.safetensors", "mlp", 1)
    out = tmp_path / "aligned.safetensors"
    argv = [str(plain), str(other), "--out", str(out), "--data-dir", str(DATA_DIR)]
    assert run_cli(main, argv) == 2
    assert "pass --model and --dataset to read it as a state_dict" in capsys.readouterr().err
    assert run_cli(main, [*argv, "--model", "mlp", "--dataset", "mnist1d"]) == 0
    reference = build_model(model_spec("mlp", 10))
    reference.load_state_dict(torch.load(plain, weights_only=True))
    expected = weight_matching(reference, checkpoint_model(load_checkpoint(other)))
    written = load_checkpoint(out)
    assert written.kind == "particle" and all(torch.equal(written.state[k], v.detach())
                                              for k, v in expected.model.state_dict().items())
    # the aligned OTHER is written with OTHER's metadata: a plain OTHER has none
    swapped = [str(other), str(plain), "--out", str(tmp_path / "c.safetensors"), "--model", "mlp", "--dataset",
               "mnist1d", "--data-dir", str(DATA_DIR)]
    assert run_cli(main, swapped) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: OTHER {plain} is a plain PyTorch file") and err.count("\n") == 1
    assert not (tmp_path / "c.safetensors").exists()


def test_generated_flags_give_an_alignment_or_one_error_line(tmp_path_factory, capsys):
    """The property test of the other tools' flags (test_flag_fuzz.py), for landscape.tools.align's: a written aligned
    checkpoint (and JSON), or one ``error:`` line, exit 2 and nothing written; the inputs never change."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from test_flag_fuzz import COUNT, JUNK, SEED

    folder = tmp_path_factory.mktemp("inputs")
    ref, other = checkpoint(folder / "a.safetensors", "mlp", 0, hidden=16), \
        checkpoint(folder / "b.safetensors", "mlp", 1, hidden=16)
    before = {p: p.read_bytes() for p in (ref, other)}
    flags = {"--max-iter": COUNT, "--seed": SEED, "--samples": COUNT, "--device": st.sampled_from(["cpu", "gpu", ""]),
             "--method": st.sampled_from(["weights", "activations", "hungarian", ""]),
             "--model": st.one_of(st.sampled_from(["mlp", "cnn1d", "torchvision:nope"]), JUNK),
             "--dataset": st.one_of(st.sampled_from(["mnist1d", "cifar10"]), JUNK)}
    chosen = st.lists(st.sampled_from(sorted(flags)), unique=True, max_size=3).flatmap(
        lambda names: st.tuples(*(flags[n].map(lambda v, n=n: [n, v]) for n in names)))

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(pairs=chosen, with_json=st.booleans())
    def check(pairs, with_json):
        out = tmp_path_factory.mktemp("out")
        argv = [str(ref), str(other), "--out", str(out / "c.safetensors"), "--data-dir", str(DATA_DIR),
                *[token for pair in pairs for token in pair], *(["--json", str(out / "r.json")] if with_json else [])]
        if "--samples" in argv and argv[argv.index("--samples") + 1].lstrip("-").isdigit() \
                and int(argv[argv.index("--samples") + 1]) > 64:
            return  # a valid but large request; not what is tested here
        code = run_cli(main, argv)
        captured = capsys.readouterr()
        assert code in (0, 2), (argv, captured.err)
        written = {p.name for p in out.iterdir()}
        if code == 2:
            assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, (argv, captured.err)
            assert not written, "a refused command writes nothing"
        else:
            assert written == {"c.safetensors", *(["r.json"] if with_json else [])}, argv
        assert all(p.read_bytes() == data for p, data in before.items()), "the inputs are never changed"

    check()
