"""SWAMP in a plain PyTorch loop on MNIST-1D: your loop, training's public blocks (docs/api.md).

    python examples/plain_pytorch.py            # 3 cycles x 3 particles x 4 epochs, about 10 s on a CPU
    python examples/plain_pytorch.py --quick    # 3 cycles x 2 particles x 2 epochs, a few seconds
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.data import load_mnist1d, mnist1d_spec
from training import SWA, Cycle, mask_optimizer, swamp_cycles


def swamp(model: nn.Module, train_set: TensorDataset, *, cycles: int, particles: int, epochs: int) -> list[Cycle]:
    """The user code: one particle's training loop, handed to the SWAMP cycles."""

    def train_particle(model, masks, seed):
        batches = DataLoader(train_set, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(seed))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        mask_optimizer(opt, model, masks)  # every opt.step() keeps pruned weights exactly 0
        swa = SWA(total=epochs, fraction=0.5, masks=masks)
        for _ in range(epochs):
            model.train()
            for x, y in batches:
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            swa.update(model)  # end-of-epoch weights, averaged over the last half
        return swa.load_into(model, DataLoader(train_set, batch_size=1000))  # the average, BN recomputed

    return swamp_cycles(model, train_particle, cycles=cycles, particles=particles, ratio=0.2,
                        bn_data=DataLoader(train_set, batch_size=1000))


def main(argv: list[str] | None = None) -> list[tuple[Cycle, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="where MNIST-1D is generated and cached")
    parser.add_argument("--quick", action="store_true", help="2 particles of 2 epochs per cycle")
    options = parser.parse_args(argv)
    data = load_mnist1d(mnist1d_spec(options.data))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 10))
    results = []
    for cycle in swamp(model, TensorDataset(data.x_train, data.y_train), cycles=3,
                       particles=2 if options.quick else 3, epochs=2 if options.quick else 4):
        model.load_state_dict(cycle.state)
        model.eval()
        with torch.no_grad():
            accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
        print(f"cycle {cycle.cycle}: density {cycle.density:.3f}, test accuracy of the average {accuracy:.3f}")
        results.append((cycle, accuracy))
    return results


if __name__ == "__main__":
    main()
