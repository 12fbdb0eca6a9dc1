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
    """Within a fit with AdamW, weight decay and gradient clipping: at every optimizer step the gradients the
    optimizer sees are 0 where pruned, and every batch starts with the pruned weights exactly 0."""
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
            return torch.optim.AdamW(self.parameters(), lr=0.05, weight_decay=0.5)

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
