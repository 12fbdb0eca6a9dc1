"""The public blocks in one's own loop against the same loop in plain PyTorch: same model, data, batches and optimizer.

* plain: ``opt.zero_grad(); cross_entropy(model(x), y).backward(); opt.step()``, nothing else;
* blocks, SWA every step: the same loop with ``training.mask_optimizer`` holding a 50%-density mask at 0
  (gradient hook before, weight hook after every step) and ``training.SWA.update(model)`` after every step,
  every step inside the averaging window (the running mean of :class:`core.averaging.RunningAverage`);
* blocks, SWA every epoch: the same with ``SWA.update`` once per epoch of MNIST-1D (SWAMP's snapshots, Izmailov
  et al. 2018: end-of-epoch weights).

``adamw-fused`` is AdamW with ``fused=True`` (one kernel per step; on a CPU it does not slow down on the zeros
that masked gradients leave in the second moment, where the default implementation's ``sqrt`` does).

Each timed call trains a fresh copy of the masked initialisation for ``--steps`` steps over the same
pre-drawn batches (setting up the optimizer, hooks and SWA included), for SGD (momentum, weight decay) and
AdamW, with :func:`benchmarks.harness.paired` (the order of the three loops rotated every round, a warm-up
round discarded); the ratios are medians (min-max) of per-round ratios, wall-clock and this process's CPU time
(steadier on a busy machine). Prints the machine and a table of milliseconds per step; the target is blocks /
plain <= 1.05. From the repository root:
``OMP_NUM_THREADS=1 python -m benchmarks.bench_blocks [--models mlp cnn1d] [--optimizers sgd adamw] [--rounds 11]
[--quick]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import Tensor, nn

from benchmarks.harness import dataset_for, machine, paired, table
from core.models import build_model, model_spec
from training import SWA, apply_masks, dense_masks, mask_optimizer, random_mask

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2),
    "adamw-fused": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, fused=True),
}


def loops(name: str, optimizer: str, device: torch.device, steps: int,
          batch_size: int) -> dict[str, Callable[[], None]]:
    """The module's three loops on ``name`` with ``optimizer``, each a call that trains a fresh copy."""
    data = dataset_for(name, device, 0)
    gen = torch.Generator().manual_seed(1)
    epoch = list(data.train_batches(batch_size, gen))
    batches: list[tuple[Tensor, Tensor]] = [epoch[i % len(epoch)] for i in range(steps)]
    torch.manual_seed(0)
    init = build_model(model_spec(name, data.num_classes)).to(device)
    masks = random_mask(dense_masks(init), 0.5, torch.Generator().manual_seed(0))
    apply_masks(init, masks)
    state = {k: v.clone() for k, v in init.state_dict().items()}
    make = OPTIMIZERS[optimizer]

    def fresh() -> nn.Module:
        model = build_model(model_spec(name, data.num_classes)).to(device)
        model.load_state_dict(state)
        return model.train()

    def plain() -> None:
        model = fresh()
        opt = make(model.parameters())
        for x, y in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    def blocks(every: int) -> None:
        model = fresh()
        opt = make(model.parameters())
        mask_optimizer(opt, model, masks)
        swa = SWA(total=steps // every, fraction=1.0, masks=masks)
        for t, (x, y) in enumerate(batches, 1):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if t % every == 0:
                swa.update(model)

    return {"plain": plain, "SWA every step": lambda: blocks(1), "SWA every epoch": lambda: blocks(len(epoch))}


def measure(name: str, optimizer: str, device: torch.device, steps: int, batch_size: int, rounds: int
            ) -> tuple[list[object], str]:
    result = paired(loops(name, optimizer, device, steps, batch_size), rounds=rounds, warmup=1, device=device)
    blocks = result.sides[1:]
    return [name, optimizer, *(f"{1e3 * side.wall_median / steps:.3f}" for side in result.sides),
            *(str(side.wall_ratio) for side in blocks), *(str(side.cpu_ratio) for side in blocks)], result.line()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn1d"])
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    parser.add_argument("--steps", type=int, default=256, help="steps per timed call (8 epochs of MNIST-1D)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=11, help="paired rounds (after one warm-up round)")
    parser.add_argument("--quick", action="store_true", help="mlp, SGD, 32 steps, 1 round: proves it runs")
    args = parser.parse_args()
    if args.quick:
        args.models, args.optimizers, args.steps, args.rounds = ["mlp"], ["sgd"], 32, 1
    device = torch.device(args.device)
    print(machine())
    rows, how = [], ""
    for m in args.models:
        for o in args.optimizers:
            row, how = measure(m, o, device, args.steps, args.batch_size, args.rounds)
            rows.append(row)
    print(how)
    print(table(["model", "optimizer", "plain ms/step", "SWA every step ms/step", "SWA every epoch ms/step",
                 "every step / plain, wall", "every epoch / plain, wall", "every step / plain, CPU",
                 "every epoch / plain, CPU"], rows))


if __name__ == "__main__":
    main()
