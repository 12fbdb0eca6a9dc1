"""SWAMP's masked SWA training against the same training written in plain PyTorch, like for like.

Both sides train a fresh copy of the same 50%-density masked initialisation for ``--epochs`` epochs on the
same batches (the toolkit's tensor pipeline, one seeded generator), SGD with momentum and weight decay:

* plain PyTorch: the loop a user would write: ``zero_grad``, ``cross_entropy(model(x), y).backward()``,
  the masks multiplied into the gradients before ``SGD.step()`` (a loop over the masked parameters, as
  :func:`training.mask_optimizer` does for SGD), the cosine schedule of ``torch.optim.lr_scheduler.
  CosineAnnealingLR`` from ``LR`` down to ``SWA_LR`` over the epochs before SWA, then constant; SWA
  (Izmailov et al. 2018) with ``torch.optim.swa_utils.AveragedModel`` updated at the end of each of the last
  quarter of the epochs, and ``torch.optim.swa_utils.update_bn`` over the un-augmented training data;
* SWAMP: :func:`training.train.train_particle` with the same settings (:class:`training.train.Schedule`:
  cosine to the SWA rate, SWA over the last quarter, snapshot average and BatchNorm recalibration over the
  training data), which also accumulates the loss for the divergence check and the log.

Both see the same ``--amp`` (bf16 autocast of the forward pass) and ``--channels-last`` settings. Models:
``cnn1d`` on MNIST-1D and the CIFAR-sized ``resnet20`` on images of torchvision's ``FakeData``. Timed with
:func:`benchmarks.harness.paired` (order alternating, a warm-up round discarded); prints the machine,
seconds per epoch and the median (min-max) of the per-round ratios SWAMP / plain, wall and CPU; the
target is <= 1.10. From the repository root:
``python -m benchmarks.bench_step [--device cuda] [--models cnn1d resnet20] [--amp] [--rounds 7] [--quick]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from benchmarks.harness import dataset_for, fakedata_cifar, machine, paired, table
from core.models import build_model, model_spec
from core.pruning import apply_masks, dense_masks, random_mask
from training.train import Hyper, Schedule, steps_per_epoch, train_particle

LR, SWA_LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.02, 0.9, 5e-4


def plain_loop(model: nn.Module, data, epochs: int, batch_size: int, seed: int, amp: bool) -> None:
    """A dense plain loop at a constant rate, nothing else: the engines' per-epoch reference
    (:mod:`benchmarks.gpu_sections`)."""
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


def plain_swa_loop(model: nn.Module, masks: dict[str, torch.Tensor], data, epochs: int, swa_epochs: int,
                   batch_size: int, seed: int, amp: bool) -> nn.Module:
    """Masked SGD with a cosine schedule and SWA in plain PyTorch (the module docstring); the BN-recomputed
    average."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    cosine_steps = (epochs - swa_epochs) * max(data.size("train") // batch_size, 1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cosine_steps, 1), eta_min=SWA_LR)
    if not cosine_steps:  # SWA from the first epoch: the SWA rate throughout
        for group in opt.param_groups:
            group["lr"] = SWA_LR
    masked = [(p, masks[n]) for n, p in model.named_parameters() if n in masks]
    average = AveragedModel(model)
    for epoch in range(epochs):
        model.train()
        for x, y in data.train_batches(batch_size, gen):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(x.device.type, torch.bfloat16, enabled=amp):
                loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            with torch.no_grad():
                for p, m in masked:
                    p.grad.mul_(m)
            opt.step()
            if epoch < epochs - swa_epochs:
                scheduler.step()
        if epoch >= epochs - swa_epochs:
            average.update_parameters(model)
    update_bn(data.eval_batches("train", 1000), average)
    return average


def step_loops(name: str, data, device: torch.device, epochs: int, batch_size: int, amp: bool = False,
               channels_last: bool = False) -> dict[str, Callable[[], None]]:
    """The two loops of the module docstring on ``data``, each a call that trains a fresh copy of one
    50%-density masked model for ``epochs`` epochs with SWA over the last quarter: ``plain`` and ``masked SWA``
    (SWAMP's)."""
    torch.manual_seed(0)
    init = build_model(model_spec(name, data.num_classes)).to(device)
    masks = random_mask(dense_masks(init), 0.5, torch.Generator().manual_seed(0))
    apply_masks(init, masks)
    state = {k: v.clone() for k, v in init.state_dict().items()}
    hyper = Hyper(batch_size, MOMENTUM, WEIGHT_DECAY, amp=amp)
    memory_format = torch.channels_last if channels_last else None
    swa_epochs = max(1, epochs // 4)
    schedule = Schedule(epochs, steps_per_epoch(data, batch_size), LR, SWA_LR, swa_epochs=swa_epochs)

    def fresh() -> nn.Module:
        model = build_model(model_spec(name, data.num_classes)).to(device, memory_format=memory_format)
        model.load_state_dict(state)
        return model

    return {"plain": lambda: plain_swa_loop(fresh(), masks, data, epochs, swa_epochs, batch_size, 1, amp),
            "masked SWA": lambda: train_particle(fresh(), masks, data, schedule, hyper,
                                                 torch.Generator().manual_seed(1))}


def measure(name: str, device: torch.device, epochs: int, batch_size: int, samples: int, rounds: int,
            amp: bool = False, channels_last: bool = False) -> tuple[list[object], str]:
    data = dataset_for(name, device, 0) if name in ("mlp", "cnn1d") else fakedata_cifar(samples, device)
    result = paired(step_loops(name, data, device, epochs, batch_size, amp, channels_last), rounds=rounds,
                    warmup=1, device=device)
    plain, ours = result["plain"], result["masked SWA"]
    return [name, f"{plain.wall_median / epochs:.3f}", f"{ours.wall_median / epochs:.3f}", str(ours.wall_ratio),
            str(ours.cpu_ratio)], result.line()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["cnn1d", "resnet20"])
    parser.add_argument("--epochs", type=int, default=16, help="16: the MNIST-1D preset's epochs per cycle")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=640, help="FakeData images for the image models")
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds (after one warm-up round)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast in both loops")
    parser.add_argument("--channels-last", action="store_true", help="channels-last models in both loops")
    parser.add_argument("--quick", action="store_true", help="2 epochs, 128 images, 1 round: proves it runs")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.samples, args.rounds = 2, 128, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine())
    rows, how = [], ""
    for m in args.models:
        row, how = measure(m, device, args.epochs, args.batch_size, args.samples, args.rounds, args.amp,
                           args.channels_last)
        rows.append(row)
    print(how)
    print(table(["model", "plain s/epoch", "SWAMP masked SWA s/epoch", "SWAMP / plain, wall (min-max)",
                 "SWAMP / plain, CPU (min-max)"], rows))


if __name__ == "__main__":
    main()
