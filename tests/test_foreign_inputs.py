"""Foreign models and data (issue 27): dict batches and ModelOutputs (the Hugging Face conventions), integer token
inputs, and a default loss that refuses targets it cannot apply to instead of returning a number.

transformers is not a dependency: :class:`ModelOutput` below is what ``transformers.utils.ModelOutput`` is for
these purposes, an ordered dict whose entries are also attributes.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from landscape import ArgumentError, hessian_trace, linear_barrier, mean_loss
from landscape.batches import DEFAULT_BN_SAMPLES, as_batches, cross_entropy


class ModelOutput(OrderedDict):
    """transformers' ModelOutput as far as a caller sees it: a dict subclass with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class TokenNet(nn.Module):
    """A text classifier the Hugging Face way: keyword inputs, a ModelOutput with ``logits``, BatchNorm inside."""

    def __init__(self, vocab: int = 20, classes: int = 3, output: str = "model_output"):
        super().__init__()
        self.emb, self.bn, self.fc = nn.Embedding(vocab, 8), nn.BatchNorm1d(8), nn.Linear(8, classes)
        self.output = output

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        logits = self.fc(torch.relu(self.bn(h.mean(1))))
        if self.output == "tensor":
            return logits
        if self.output == "loss_only":
            return ModelOutput(loss=logits.sum())
        return ModelOutput(logits=logits)


def _tokens(n: int = 2600, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 20, (n, 6), generator=g), torch.randint(0, 3, (n,), generator=g)


def _models(**kwargs):
    torch.manual_seed(0)
    return TokenNet(**kwargs), TokenNet(**kwargs)


# --- dict batches and ModelOutputs: the same numbers as tuples and tensors ------------------------------

def test_dict_batches_with_batchnorm_and_more_than_2048_samples_equal_tuple_batches():
    """Issue 27 item 8: dict batches of more than DEFAULT_BN_SAMPLES samples with BatchNorm recomputed raised
    ``TypeError: unhashable type: 'slice'``; they give the tuple batches' barrier to the bit."""
    ids, y = _tokens()
    assert len(y) > DEFAULT_BN_SAMPLES
    a, b = _models()
    dicts = [{"input_ids": ids[i:i + 1000], "labels": y[i:i + 1000]} for i in range(0, len(y), 1000)]
    tuples = [(ids[i:i + 1000], y[i:i + 1000]) for i in range(0, len(y), 1000)]
    a_plain, b_plain = _models(output="tensor")
    from_dicts = linear_barrier(a, b, dicts, points=3)
    from_tuples = linear_barrier(a_plain, b_plain, tuples, points=3)
    assert from_dicts.bn == from_tuples.bn == f"recalibrated on {DEFAULT_BN_SAMPLES} samples"
    assert from_dicts.losses == from_tuples.losses and from_dicts.errors == from_tuples.errors
    # an (X, y) pair whose X is a mapping of tensors is cut into batches as a tensor X is
    pair = linear_barrier(a, b, ({"input_ids": ids}, y), points=3, batch_size=1000)
    assert pair.losses == from_tuples.losses


def test_dict_batches_pass_every_other_key_as_a_keyword_and_keep_labels_from_the_model():
    ids, y = _tokens(40)
    mask = torch.ones(40, 6)
    mask[:, 3:] = 0
    a, _ = _models()
    seen = []
    a.register_forward_pre_hook(lambda _m, args, kwargs: seen.append((args, sorted(kwargs))), with_kwargs=True)
    point = mean_loss(a, [{"input_ids": ids, "attention_mask": mask, "labels": y}])
    assert seen == [((), ["attention_mask", "input_ids"])]
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(a.eval()(ids, mask).logits, y))
    assert point.loss == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ArgumentError, match="data batch 0 is a mapping without 'labels'"):
        mean_loss(a, [{"input_ids": ids, "targets": y}])


def test_hessian_of_dict_batches_and_model_outputs_equals_that_of_tuples():
    ids, y = _tokens(64)
    a, _ = _models()
    plain, _ = _models(output="tensor")
    dicts = hessian_trace(a, [{"input_ids": ids[:32], "labels": y[:32]}, {"input_ids": ids[32:], "labels": y[32:]}],
                          probes=4)
    tuples = hessian_trace(plain, (ids, y), probes=4, batch_size=32)
    assert dicts.samples == pytest.approx(tuples.samples, rel=1e-5)


def test_a_model_output_reaches_a_custom_loss_as_it_is():
    ids, y = _tokens(40)
    a, _ = _models()
    got = []

    def loss_fn(out, targets):
        got.append(type(out))
        return nn.functional.cross_entropy(out.logits, targets)

    assert mean_loss(a, [{"input_ids": ids, "labels": y}], loss_fn).loss == \
        pytest.approx(mean_loss(a, [{"input_ids": ids, "labels": y}]).loss, rel=1e-6)
    assert got == [ModelOutput]


def test_an_output_without_logits_is_refused_naming_loss_fn():
    ids, y = _tokens(40)
    a, _ = _models(output="loss_only")
    with pytest.raises(ArgumentError, match=r"^loss_fn: the default cross-entropy needs class logits, but the model "
                                            r"returned a ModelOutput with keys loss; pass a loss_fn"):
        mean_loss(a, [{"input_ids": ids, "labels": y}])


# --- the default loss refuses targets it cannot apply to (issue 27 item 2) ---------------------------------

REGRESSION = nn.Linear(3, 2)
BAD_TARGETS = {
    "float targets of the outputs' shape (regression)": (
        torch.randn(8, 2), r"needs integer class targets, got torch.float32 targets of shape \(8, 2\)"),
    "boolean targets": (torch.ones(8, dtype=torch.bool), "needs integer class targets, got torch.bool"),
    "targets of another shape": (torch.zeros(8, 2, dtype=torch.long), r"needs targets of shape \(8,\) for outputs "
                                                                       r"of shape \(8, 2\), got \(8, 2\)"),
    "a class beyond the outputs": (torch.tensor([0, 1, 2, 0, 1, 0, 1, 0]), r"target class 2 is outside the model's "
                                                                             r"2 classes \[0, 2\)"),
    "a negative class": (torch.tensor([0, -1, 1, 0, 1, 0, 1, 0]), "target class -1 is outside"),
}


@pytest.mark.parametrize("case", sorted(BAD_TARGETS))
@pytest.mark.parametrize("analysis", ["mean_loss", "linear_barrier", "hessian_trace", "cross_entropy"])
def test_the_default_loss_refuses_targets_it_cannot_apply_to(case, analysis):
    targets, message = BAD_TARGETS[case]
    x = torch.randn(8, 3)
    run = {"mean_loss": lambda: mean_loss(REGRESSION, as_batches((x, targets))),
           "linear_barrier": lambda: linear_barrier(REGRESSION, nn.Linear(3, 2), (x, targets), points=2),
           "hessian_trace": lambda: hessian_trace(REGRESSION, (x, targets), probes=2),
           "cross_entropy": lambda: cross_entropy(REGRESSION(x), targets)}[analysis]
    with pytest.raises(ArgumentError, match="^loss_fn: (the default cross-entropy )?" + message):
        run()


def test_one_dimensional_outputs_are_not_class_logits():
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    with pytest.raises(ArgumentError, match=r"needs floating-point class logits of shape \(N, C, ...\), but the model "
                                            r"returned torch.float32 outputs of shape \(8,\)"):
        mean_loss(nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)), [(x, y)])


def test_padding_targets_are_ignored_as_cross_entropy_ignores_them():
    """-100, the ignore_index of torch's cross-entropy (Hugging Face pads labels with it), is not a bad class."""
    x, y = torch.randn(8, 3), torch.tensor([0, 1, -100, 0, 1, 1, 0, 1])
    with torch.no_grad():
        assert float(cross_entropy(REGRESSION(x), y)) == float(nn.functional.cross_entropy(REGRESSION(x), y))


def test_the_regression_targets_of_the_issue_work_with_a_loss_that_fits():
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    with torch.no_grad():
        expected = float(nn.functional.mse_loss(REGRESSION(x), y))
    assert mean_loss(REGRESSION, [(x, y)], nn.MSELoss()).loss == pytest.approx(expected)


# --- integer token inputs stay integers (issue 27 item 10) --------------------------------------------------

class Tokens(nn.Module):
    """A bag-of-embeddings classifier: its inputs must be integer token ids."""

    def __init__(self, num_classes: int, vocab: int = 30):
        super().__init__()
        self.emb, self.fc = nn.Embedding(vocab, 8), nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.emb(x).mean(1))


def _token_sets(dtype=torch.int64):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 30, (96, 6), generator=g).to(dtype), torch.randint(0, 3, (96,), generator=g)
    train = torch.utils.data.TensorDataset(x, y)
    train.num_classes = 3
    return train, torch.utils.data.TensorDataset(x[:32], y[:32])


@pytest.mark.parametrize("kind", ["tensor int64", "tensor int32", "numpy int32"])
def test_integer_inputs_reach_the_model_as_the_same_integers(kind):
    from core.data.factory import from_datasets

    train, test = _token_sets(torch.int32 if "int32" in kind else torch.int64)
    if kind.startswith("numpy"):
        train = [(x.numpy(), int(y)) for x, y in train]
        train = type("Samples", (list,), {"num_classes": 3})(train)
    data = from_datasets(train, test, name="tokens", device="cpu")
    x, _ = next(iter(data.eval_batches("train", 96)))
    assert x.dtype == torch.int64 and torch.equal(x, torch.stack([torch.as_tensor(s[0]) for s in train]).long())


def test_pixels_and_real_numbers_are_still_float32():
    from core.data.loader import as_input

    assert as_input(torch.full((2, 2), 255, dtype=torch.uint8)).dtype == torch.float32
    assert as_input(torch.ones(3, dtype=torch.float64)).dtype == torch.float32


def test_a_token_classifier_trains_on_integer_inputs(tmp_path):
    """The issue's run: an embedding model on integer tokens failed with 'choose a model for ...'."""
    import training

    train, test = _token_sets()
    result = training.run_swamp(model_fn=Tokens, train_set=train, test_set=test, cycles=1, epochs=1, particles=2,
                                rewind_epochs=0, batch_size=32, progress=False, out=str(tmp_path / "r"))
    assert len(result.cycles) == 1 and 0 <= result.final["average"]["test_acc"] <= 1
    assert math.isfinite(result.final["average"]["test_loss"])


def test_inputs_mixing_integers_and_floats_are_refused_in_one_line():
    from core.data.factory import from_datasets
    from core.errors import UserError

    train, test = _token_sets()
    mixed = type("Samples", (list,), {"num_classes": 3})([(x.float() if i % 2 else x, y) for i, (x, y) in
                                                           enumerate(train)])
    with pytest.raises(UserError, match="^dataset python:mixed: train inputs are both torch.float32 and torch.int64; "
                                        "every input must hold the same kind of numbers"):
        from_datasets(mixed, test, name="mixed", device="cpu")


class Keyword(nn.Module):
    """A model whose forward names its input (a torch.fx-traceable one, as activation matching needs)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, features):
        return self.b(torch.relu(self.a(features)))


def test_activation_matching_reads_dict_batches_as_tuples():
    from landscape import activation_matching

    torch.manual_seed(0)
    a, b = Keyword(), Keyword()
    X, y = torch.randn(256, 4), torch.zeros(256, dtype=torch.long)
    from_dicts = activation_matching(a, b, [{"features": X, "labels": y}])
    from_pair = activation_matching(a, b, (X, y))
    assert from_dicts.permutations == from_pair.permutations and from_dicts.objectives == from_pair.objectives
    with pytest.raises(ArgumentError, match="^data: the inputs x do not fit the arguments features of the model's "
                                            "forward"):
        activation_matching(a, b, [{"x": X, "labels": y}])


# --- inputs a model cannot take are an ArgumentError, not a raw torch error (issue 27 item 15) ----------------

@pytest.mark.parametrize("analysis", ["mean_loss", "linear_barrier", "linear_barrier with BatchNorm",
                                      "hessian_trace"])
def test_inputs_the_model_cannot_take_are_refused_naming_them(analysis):
    """Integer features for a float layer raised torch's ``RuntimeError: mat1 and mat2 must have the same dtype``
    from inside the model; the inputs' dtype and shape now name the problem (the model's message follows)."""
    x, y = torch.randint(0, 5, (16, 4)), torch.randint(0, 3, (16,))

    def net():
        layers = [nn.Linear(4, 8), nn.BatchNorm1d(8)] if "BatchNorm" in analysis else [nn.Linear(4, 8)]
        return nn.Sequential(*layers, nn.ReLU(), nn.Linear(8, 3))

    run = {"mean_loss": lambda: mean_loss(net(), [(x, y)]),
           "linear_barrier": lambda: linear_barrier(net(), net(), (x, y), points=2),
           "linear_barrier with BatchNorm": lambda: linear_barrier(net(), net(), (x, y), points=2),
           "hessian_trace": lambda: hessian_trace(net(), ({"input": x}, y), probes=2)}[analysis]
    name = "bn_data" if "BatchNorm" in analysis else "data"
    shown = "input: torch.int64" if analysis == "hessian_trace" else "torch.int64"
    with pytest.raises(ArgumentError, match=rf"^{name}: the model cannot take these inputs \({shown} of shape "
                                            r"\(16, 4\)\): mat1 and mat2 must have the same dtype"):
        run()
    with pytest.raises(ArgumentError, match=r"\(torch.float32 of shape \(16, 5\)\): mat1 and mat2 shapes cannot"):
        mean_loss(net(), [(torch.randn(16, 5), y)])
