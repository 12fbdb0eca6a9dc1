"""SWAMP in other people's training loops: the examples/ scripts run as written (plain PyTorch, Lightning,
Hugging Face), prune geometrically, keep pruned weights at exactly 0 and evaluate the averaged solution; the
framework integrations import their framework only when used."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest
import torch
from conftest import DATA_DIR, REPOSITORY

from training.integrations.cycles import require

EXAMPLES = REPOSITORY / "examples"


def run_example(name: str, *argv: str) -> list:
    """The example's ``main(argv)``: a (cycle, test accuracy of the average) pair per cycle."""
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"](["--quick", *argv])


def check_swamp(results: list, chance: float) -> None:
    """Cycle k trains at density 0.8^k (20% of the kept weights pruned per cycle, rounded per step); the last
    solution's pruned weights are exactly 0; every average was evaluated and beats chance."""
    cycles = [cycle for cycle, _ in results]
    kept, total = [], sum(m.numel() for m in cycles[0].masks.values())
    for cycle in cycles:
        kept.append(int(sum(m.sum() for m in cycle.masks.values())))
        assert cycle.density == pytest.approx(kept[-1] / total)
    assert kept[0] == total
    assert all(after == before - round(0.2 * before) for before, after in zip(kept, kept[1:], strict=False))
    assert [round(c.density, 2) for c in cycles] == [1.0, 0.8, 0.64]
    last = cycles[-1]
    assert all(bool((last.state[name][mask == 0] == 0).all()) for name, mask in last.masks.items())
    assert all(bool((last.state[name][mask == 1] != 0).all()) for name, mask in last.masks.items())
    accuracies = [accuracy for _, accuracy in results]
    assert all(chance + 0.1 < a <= 1.0 for a in accuracies), accuracies


def test_plain_pytorch_example():
    check_swamp(run_example("plain_pytorch.py", "--data", str(DATA_DIR)), chance=0.1)


def test_lightning_example():
    pytest.importorskip("lightning")
    check_swamp(run_example("lightning_swamp.py", "--data", str(DATA_DIR)), chance=0.1)


def test_huggingface_example():
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    check_swamp(run_example("huggingface_swamp.py"), chance=0.5)


def test_lightning_callback_holds_pruned_weights_and_gradients_at_zero_during_fit():
    """Within a fit with AdamW whose moments come from a dense step (they would move pruned weights), weight decay
    and gradient clipping: at every optimizer step the gradients the optimizer sees are 0 where pruned, and
    every batch starts with the pruned weights exactly 0."""
    pl = pytest.importorskip("lightning.pytorch")
    from training.integrations.lightning import SWAMPCallback

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 3))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(self.parameters(), lr=0.05, weight_decay=0.5)
            self(torch.randn(8, 6)).pow(2).sum().backward()
            optimizer.step()  # a dense step: nonzero moments at what the masks prune
            optimizer.zero_grad()
            return optimizer

    seen = {"grads": [], "weights": []}

    class Watch(pl.Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer):
            params = dict(module.named_parameters())
            seen["grads"].append(all(bool((params[n].grad[m == 0] == 0).all()) for n, m in masks.items()))

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            params = dict(module.named_parameters())
            seen["weights"].append(all(bool((params[n][m == 0] == 0).all()) for n, m in masks.items()))

    torch.manual_seed(0)
    module = Net()
    masks = {"net.0.weight": (torch.rand(16, 6) < 0.5).float(), "net.2.weight": (torch.rand(3, 16) < 0.5).float()}
    data = torch.utils.data.TensorDataset(torch.randn(96, 6), torch.randint(0, 3, (96,)))
    callback = SWAMPCallback(masks, fraction=0.5)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=0.1,
                         callbacks=[Watch(), callback])
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=16))
    assert len(seen["grads"]) == len(seen["weights"]) == 4 * 6 and all(seen["grads"]) and all(seen["weights"])
    assert callback.duties.swa.count == 2  # epochs 2 and 3 averaged, and the average is what the module holds
    params = dict(module.named_parameters())
    assert all(bool((params[n][m == 0] == 0).all()) for n, m in masks.items())
    assert not module.training  # BatchNorm recomputed on the training batches leaves it in eval mode


def test_importing_training_and_the_integrations_does_not_import_the_frameworks():
    code = ("import sys, training, training.integrations.lightning, training.integrations.huggingface; "
            "print(sorted({'lightning', 'transformers', 'pytorch_lightning'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPOSITORY)
    assert out.stdout.strip() == "[]"


def test_a_missing_framework_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    with pytest.raises(ImportError) as error:
        require("lightning.pytorch", "lightning")
    assert "pip install 'swamp-toolkit[lightning]'" in str(error.value) and "\n" not in str(error.value)


def test_huggingface_callback_holds_pruned_weights_and_gradients_at_zero_during_training(tmp_path):
    """Within Trainer.train with AdamW whose moments come from dense training before the mask (they would move
    pruned weights), decoupled weight decay and gradient clipping: every optimizer step sees gradients that are
    0 where pruned, every step starts with the pruned weights exactly 0, and the SWA average of the last half
    of the epochs is what the model holds afterwards."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from training import dense_masks, next_masks
    from training.integrations.huggingface import SWAMPTrainerCallback

    seen = {"grads": [], "weights": []}

    def pruned_are_zero(model, of):
        params = dict(model.named_parameters())
        return all(bool((of(params[n])[m == 0] == 0).all()) for n, m in masks.items())

    class Watch(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            seen["weights"].append(pruned_are_zero(model, lambda p: p))

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            seen["grads"].append(pruned_are_zero(model, lambda p: p.grad))

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=8, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    masks = next_masks("random", model, dense_masks(model), 0.5, torch.Generator().manual_seed(0))
    ids = torch.randint(0, 16, (64, 8), generator=torch.Generator().manual_seed(1))
    data = [{"input_ids": row, "labels": int(row[0] < 8)} for row in ids]
    args = transformers.TrainingArguments(output_dir=str(tmp_path), num_train_epochs=4, learning_rate=0.05,
                                          weight_decay=0.5, max_grad_norm=0.1, per_device_train_batch_size=16,
                                          use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
                                          disable_tqdm=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.5)
    model(input_ids=ids, labels=(ids[:, 0] < 8).long()).loss.backward()
    optimizer.step()  # a dense step: nonzero moments at what the masks prune
    optimizer.zero_grad()
    callback = SWAMPTrainerCallback(masks, fraction=0.5)
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[Watch(), callback],
                         optimizers=(optimizer, None)).train()
    assert len(seen["grads"]) == len(seen["weights"]) == 4 * 4 and all(seen["grads"]) and all(seen["weights"])
    assert callback.duties.swa.count == 2
    assert torch.equal(model.state_dict()["classifier.weight"], callback.duties.swa.state()["classifier.weight"])
    assert pruned_are_zero(model, lambda p: p)


def test_huggingface_callback_refuses_step_counted_training():
    pytest.importorskip("transformers")
    from training.integrations.huggingface import epochs_of

    class Args:
        max_steps, num_train_epochs = 100, 3.0

    with pytest.raises(ValueError, match="num_train_epochs >= 1 and no max_steps"):
        epochs_of(Args())


@pytest.mark.parametrize(("framework", "module", "name"), [
    ("lightning", "training.integrations.lightning", "SWAMPCallback"),
    ("transformers", "training.integrations.huggingface", "SWAMPTrainerCallback")])
def test_the_callbacks_pickle_by_name(framework, module, name):
    """Spawned workers (Lightning's ddp_spawn) receive callbacks pickled: the lazily built class is found by name."""
    pytest.importorskip(framework)
    import importlib
    import pickle

    callback_class = getattr(importlib.import_module(module), name)
    callback = pickle.loads(pickle.dumps(callback_class({"w": torch.tensor([1.0, 0.0])}, fraction=0.5)))
    assert type(callback) is callback_class and callback.masks["w"].tolist() == [1.0, 0.0]
