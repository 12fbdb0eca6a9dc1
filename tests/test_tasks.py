"""The runner beyond class labels: mapping batches (the Hugging Face convention), regression targets and a
tiny Hugging Face language model, through training, evaluation (loss, no accuracy where none is defined),
BN recalibration, pruning and checkpoints; bad combinations are one ``error:`` line."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import DATA_DIR, one_line
from test_bad_flags import one_error_line
from torch import nn

from core.artifacts.checkpoint import load_checkpoint
from core.averaging import recalibrate_batchnorm
from core.data import from_datasets
from core.errors import UserError, run_cli
from training import run_swamp
from training.engines import auto as auto_module
from training.swamp import format_row
from training.swamp import main as swamp_main

SMALL = {"cycles": 2, "epochs": 1, "rewind_epochs": 1, "progress": False, "data_dir": str(DATA_DIR)}
VOCAB, LENGTH = 50, 8


class Records(torch.utils.data.Dataset):
    """``n`` mapping samples {"features": (6,), "labels": class} of 3 classes (the class shifts the features)."""

    num_classes = 3

    def __init__(self, n: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=gen)
        self.x = torch.randn(n, 6, generator=gen) + self.y[:, None].float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"features": self.x[i], "labels": self.y[i]}


class KeywordNet(nn.Module):
    """A classifier with BatchNorm whose input is the keyword ``features``."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


def records():
    """A ``--dataset PACKAGE.MODULE:CALLABLE`` factory of mapping samples."""
    return Records(64), Records(16, seed=1)


class Regression(torch.utils.data.Dataset):
    """``(x, y)`` with x (5,) and real-valued y = A x (3,)."""

    def __init__(self, n: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 5, generator=gen)
        self.y = self.x @ torch.randn(5, 3, generator=torch.Generator().manual_seed(9))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def regressor(num_classes: int) -> nn.Module:
    """The model of :class:`Regression`: ``num_classes`` is the targets' width (3)."""
    return nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, num_classes))


class Tokens(torch.utils.data.Dataset):
    """Random token sequences as {"input_ids", "labels"} (labels = inputs: a causal LM shifts them itself)."""

    num_classes = VOCAB  # the model's vocabulary

    def __init__(self, n: int, seed: int = 0):
        self.ids = torch.randint(0, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_llama(num_classes: int) -> nn.Module:
    """A one-layer LLaMA built from its config (nothing downloaded): every projection is an ``nn.Linear``,
    so pruning covers all but the embedding (GPT-2's ``Conv1D`` layers are not prunable layers)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=num_classes, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=LENGTH,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
    return LlamaForCausalLM(config)


def _pruned_stay_zero(path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    assert all(bool((ckpt.state[name][mask == 0] == 0).all()) for name, mask in ckpt.masks.items())
    return ckpt.masks


def _results(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_tiny_llama_trains_on_mapping_batches_with_its_own_loss(tmp_path):
    pytest.importorskip("transformers")
    result = run_swamp(model_fn=tiny_llama, train_set=Tokens(64), test_set=Tokens(16, seed=1), loss="model",
                       particles=2, batch_size=16, lr=0.05, swa_lr=0.01, out=str(tmp_path / "lm"), **SMALL)
    assert [round(c["density"], 2) for c in result.cycles] == [1.0, 0.8]
    masks = _pruned_stay_zero(result.run_dir / "cycle_01" / "average.safetensors")
    for p in range(2):
        _pruned_stay_zero(result.run_dir / "cycle_01" / f"particle_{p:02d}.safetensors")
    assert "lm_head.weight" in masks and "model.layers.0.self_attn.q_proj.weight" in masks
    assert "model.embed_tokens.weight" not in masks
    pruned = sum(int((m == 0).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert abs(pruned - 0.2) < 0.01
    for cycle in result.cycles:  # a language model's loss, near log(VOCAB) on random tokens; no accuracy
        assert cycle["average"]["test_acc"] is None and cycle["ensemble"] == {"test_loss": None, "test_acc": None}
        assert all(p["test_acc"] is None for p in cycle["particles"])
        assert abs(cycle["average"]["test_loss"] - math.log(VOCAB)) < 0.5
    row = _results(result.run_dir)[1]
    assert row["average_test_acc"] == row["particle_test_acc_mean"] == row["ensemble_test_acc"] == ""
    assert float(row["average_test_loss"]) == pytest.approx(result.final["average"]["test_loss"])
    assert "-" in format_row(result.final)


def test_mapping_batches_of_class_labels_give_accuracy_and_recalibrated_batchnorm(tmp_path):
    result = run_swamp(model_fn=KeywordNet, train_set=Records(64), test_set=Records(16, seed=1), particles=2,
                       batch_size=16, bn_samples=0, out=str(tmp_path / "kw"), **SMALL)
    final = result.final
    assert all(0.0 <= x <= 1.0 for x in (final["average"]["test_acc"], final["ensemble"]["test_acc"]))
    average = load_checkpoint(result.run_dir / "cycle_01" / "average.safetensors")
    net = KeywordNet()
    net.load_state_dict(average.state)
    data = from_datasets(Records(64), Records(16, seed=1), name="records", device="cpu")
    recalibrate_batchnorm(net, data.eval_batches("train", 1000))  # mapping batches: features as a keyword
    assert torch.allclose(net.body[1].running_mean, average.state["body.1.running_mean"], atol=1e-5)


def test_regression_reports_the_mean_squared_error_and_no_accuracy(tmp_path):
    settings = {"model_fn": regressor, "train_set": Regression(64), "test_set": Regression(16, seed=1), "loss": "mse",
                "particles": 2, "batch_size": 16, "lr": 0.01, "swa_lr": 0.005, "out": str(tmp_path / "reg"), **SMALL}
    result = run_swamp(**settings)
    assert run_swamp(**settings, resume=True).cycles == result.cycles  # null accuracies read back as written
    assert result.run_dir.joinpath("config.json").is_file()
    average = load_checkpoint(result.run_dir / "cycle_01" / "average.safetensors")
    assert average.model["kwargs"]["num_classes"] == 3  # the targets' width
    net = regressor(3)
    net.load_state_dict(average.state)
    test = Regression(16, seed=1)
    with torch.no_grad():
        mse = float(nn.functional.mse_loss(net(test.x), test.y))
    assert result.final["average"]["test_loss"] == pytest.approx(mse, rel=1e-5)
    assert result.final["average"]["test_acc"] is None and _results(result.run_dir)[1]["average_test_acc"] == ""


def test_auto_runs_data_without_class_labels_on_the_sequential_engine(tmp_path, monkeypatch):
    """Four MLP particles on the CPU are stacked for class labels; soft-label targets (cross-entropy of
    probabilities) are not class labels, so ``auto`` trains them one after the other."""
    chosen = []
    real = auto_module.select_engine
    monkeypatch.setattr(auto_module, "select_engine", lambda name: chosen.append(name) or real(name))
    x = torch.randn(32, 8)
    soft = torch.softmax(torch.randn(32, 10), dim=1)
    data = torch.utils.data.TensorDataset(x, soft)
    result = run_swamp(model="mlp", model_kwargs={"length": 8, "hidden": 16}, train_set=data, test_set=data,
                       particles=4, batch_size=8, out=str(tmp_path / "soft"), **{**SMALL, "cycles": 1})
    assert chosen == ["sequential"] and result.final["average"]["test_acc"] is None


def test_mapping_samples_are_checked_in_one_line():
    class Ragged(Records):
        def __getitem__(self, i):
            return {"features": self.x[i][: 6 - i % 2], "labels": self.y[i]}

    class OtherKeys(Records):
        def __getitem__(self, i):
            return {"features": self.x[i]} if i else {"features": self.x[i], "labels": self.y[i]}

    assert "values of 'features' are" in one_line(from_datasets, Ragged(8), Ragged(8), name="r", device="cpu")
    assert "same keys" in one_line(from_datasets, OtherKeys(8), OtherKeys(8), name="k", device="cpu")
    bad = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randn(8, 2))
    good = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randn(8, 4))
    assert "test targets are torch.float32 (2,) and torch.float32 (4,)" in one_line(from_datasets, good, bad,
                                                                                     name="t", device="cpu")
    with pytest.raises(UserError, match="--engine vectorized stacks"):
        run_swamp(model_fn=KeywordNet, train_set=Records(16), test_set=Records(8), engine="vectorized",
                  particles=2, out="unused", **SMALL)


@pytest.mark.parametrize(("args", "says"), [
    (["--loss", "model"], "--loss model needs a model that returns its own loss"),
    (["--dataset", f"{__name__}:records", "--model", f"{__name__}:KeywordNet", "--engine", "vectorized",
      "--particles", "2"], "--engine vectorized stacks (input, class label) batches only"),
    (["--dataset", f"{__name__}:records", "--model", f"{__name__}:KeywordNet", "--loss", "mse"],
     "--loss mse needs real-valued targets"),
    (["--loss", "model", "--label-smoothing", "0.1"], "--label-smoothing applies to --loss cross-entropy"),
])
def test_bad_task_combinations_are_one_error_line(tmp_path, capsys, args, says):
    out = tmp_path / "run"
    assert run_cli(swamp_main, ["--out", str(out), "--no-progress", "--data-dir", str(DATA_DIR), "--trust-code",
                                *args]) == 2
    one_error_line(capsys, says)
    assert not out.exists()


def test_regression_targets_stream_as_they_are_held(monkeypatch):
    from core.data import loader

    held = from_datasets(Regression(20), Regression(8, seed=1), name="reg", device="cpu")
    monkeypatch.setattr(loader, "MATERIALISE_LIMIT", 0)
    streamed = from_datasets(Regression(20), Regression(8, seed=1), name="reg", device="cpu")
    assert type(streamed).__name__ == "StreamingDataset" and not streamed.class_labels
    for a, b in zip(held.train_batches(8, torch.Generator().manual_seed(3)),
                    streamed.train_batches(8, torch.Generator().manual_seed(3)), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[1].shape == (8, 3)
