"""Masked SWA training against a plain dense PyTorch loop: same model, data, batches and optimiser.

* plain: ``zero_grad; cross_entropy(model(x), y).backward(); SGD(momentum, weight decay).step()``
  over the toolkit's batches, nothing else;
* masked: :func:`training.train.train_particle` on a 50%-density mask (LR schedule, gradient masking,
  loss and divergence check), no SWA;
* masked SWA: the same with SWA over the last quarter of the epochs, which adds the snapshot average
  and, at the end, one BatchNorm recalibration pass over the training data (a forward pass).

Both see identical batches (the same seeded generator) and the same ``--amp`` (bf16 autocast of the
forward pass) and ``--channels-last`` settings. Prints the machine, seconds per epoch (median of
alternating repeats) and the ratios; the target is masked SWA / plain <= 1.10. From the repository
root: ``python -m benchmarks.bench_step [--device cuda] [--models mlp cnn1d resnet20] [--amp]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.harness import alternating, dataset_for, machine, table
from core.models import build_model, model_spec
from core.pruning import apply_masks, dense_masks, random_mask
from training.train import Hyper, Schedule, steps_per_epoch, train_particle

LR, SWA_LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.02, 0.9, 5e-4


def plain_loop(model: nn.Module, data, epochs: int, batch_size: int, seed: int, amp: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    model.train()
    for _ in range(epochs):
        for x, y in data.train_batches(batch_size, gen):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(x.device.type, torch.bfloat16, enabled=amp):
                loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()


def step_loops(name: str, data, device: torch.device, epochs: int, batch_size: int, amp: bool = False,
               channels_last: bool = False) -> dict[str, Callable[[], None]]:
    """The three loops of the module docstring on ``data``, each a call that trains a fresh copy of one
    50%-density masked model for ``epochs`` epochs: ``plain``, ``masked`` and ``masked SWA``."""
    torch.manual_seed(0)
    init = build_model(model_spec(name, data.num_classes)).to(device)
    masks = random_mask(dense_masks(init), 0.5, torch.Generator().manual_seed(0))
    apply_masks(init, masks)
    state = {k: v.clone() for k, v in init.state_dict().items()}
    hyper = Hyper(batch_size, MOMENTUM, WEIGHT_DECAY, amp=amp)
    memory_format = torch.channels_last if channels_last else None
    spe = steps_per_epoch(data, batch_size)
    no_swa = Schedule(epochs, spe, LR, 0.0)
    swa = Schedule(epochs, spe, LR, SWA_LR, swa_epochs=max(1, epochs // 4))

    def fresh() -> nn.Module:
        model = build_model(model_spec(name, data.num_classes)).to(device, memory_format=memory_format)
        model.load_state_dict(state)
        return model

    def ours(schedule: Schedule) -> None:
        train_particle(fresh(), masks, data, schedule, hyper, torch.Generator().manual_seed(1))

    return {"plain": lambda: plain_loop(fresh(), data, epochs, batch_size, 1, amp), "masked": lambda: ours(no_swa),
            "masked SWA": lambda: ours(swa)}


def measure(name: str, device: torch.device, epochs: int, batch_size: int, samples: int, repeats: int,
            amp: bool = False, channels_last: bool = False) -> list[object]:
    loops = step_loops(name, dataset_for(name, device, samples), device, epochs, batch_size, amp, channels_last)
    plain, masked, masked_swa = (t / epochs for t in alternating(list(loops.values()), repeats, device))
    return [name, f"{plain:.3f}", f"{masked:.3f}", f"{masked_swa:.3f}", f"{masked / plain:.3f}",
            f"{masked_swa / plain:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn1d", "resnet20"])
    parser.add_argument("--epochs", type=int, default=16, help="16: the MNIST-1D preset's epochs per cycle")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=1280, help="CIFAR-like images for the image models")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast in both loops")
    parser.add_argument("--channels-last", action="store_true", help="channels-last models in both loops")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine())
    rows = [measure(m, device, args.epochs, args.batch_size, args.samples, args.repeats, args.amp,
                    args.channels_last) for m in args.models]
    print(table(["model", "plain s/epoch", "masked s/epoch", "masked SWA s/epoch", "masked / plain",
                 "masked SWA / plain"], rows))


if __name__ == "__main__":
    main()
