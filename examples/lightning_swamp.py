"""SWAMP with PyTorch Lightning on MNIST-1D: a LightningModule, a Trainer per particle, the SWAMP callback.

    pip install 'swamp-toolkit[lightning]'
    python examples/lightning_swamp.py            # 3 cycles x 3 particles x 4 epochs
    python examples/lightning_swamp.py --quick    # 3 cycles x 2 particles x 2 epochs, seconds on a CPU
"""

from __future__ import annotations

import argparse
import logging

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.data import load_mnist1d, mnist1d_spec
from training.integrations.cycles import Cycle
from training.integrations.lightning import swamp_lightning


class Classifier(pl.LightningModule):
    """An MLP with BatchNorm trained by Adam: an ordinary LightningModule, nothing SWAMP-specific."""

    def __init__(self, lr: float = 1e-2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(40, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 10))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=1e-2)


def main(argv: list[str] | None = None) -> list[tuple[Cycle, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="where MNIST-1D is generated and cached")
    parser.add_argument("--quick", action="store_true", help="2 particles of 2 epochs per cycle")
    options = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    data = load_mnist1d(mnist1d_spec(options.data))
    train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=128, shuffle=True)
    torch.manual_seed(0)
    module = Classifier()
    cycles = swamp_lightning(module, train, trainer_kwargs={"max_epochs": 2 if options.quick else 4},
                             cycles=3, particles=2 if options.quick else 3, ratio=0.2, fraction=0.5)
    results = []
    for cycle in cycles:
        module.load_state_dict(cycle.state)
        module.eval()
        with torch.no_grad():
            accuracy = (module(data.x_test).argmax(1) == data.y_test).float().mean().item()
        print(f"cycle {cycle.cycle}: density {cycle.density:.3f}, test accuracy of the average {accuracy:.3f}")
        results.append((cycle, accuracy))
    return results


if __name__ == "__main__":
    main()
