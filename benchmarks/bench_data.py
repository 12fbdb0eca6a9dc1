"""The on-device tensor pipeline against torchvision DataLoader pipelines, on the same CIFAR-sized data.

All produce one shuffled epoch of normalised, augmented (4-pixel pad + random 32x32 crop, random
horizontal flip) batches of CIFAR-10-shaped images on the training device:

* tensors: :class:`core.data.TensorDataset` -- the images held normalised on the device (normalised once),
  shuffling and augmentation as batched tensor operations (what the toolkit uses for CIFAR);
* DataLoader, same tensors: the same normalised float images (normalised once, as on the tensors' side),
  per-image ``transforms.RandomCrop(32, 4)`` and ``RandomHorizontalFlip`` on tensors,
  ``DataLoader(shuffle, drop_last, num_workers=W, pin_memory on GPUs)``, batches moved to the device: the
  like-for-like comparison;
* DataLoader, torchvision recipe (``--recipe``): uint8 HWC images, per-image PIL ``RandomCrop(32, 4)``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` every epoch, as ``torchvision.datasets.CIFAR10``
  applies them: more work per epoch (decoding and normalising every image every epoch), what users run.

The images are random bytes (no CIFAR download here): the pipelines' cost does not depend on the
pixel values. Timed with :func:`benchmarks.harness.paired` (order rotated every round, a warm-up epoch
discarded); prints samples per second (median) and the median (min-max) of the per-round ratios
DataLoader / tensors (the tensors' speed-up), wall-clock (workers' CPU time is not this process's). From
the repository root: ``python -m benchmarks.bench_data [--device cuda] [--workers 0 2] [--recipe] [--quick]``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from benchmarks.harness import cifar_like, cifar_like_uint8, machine, paired, table
from core.data.cifar import CIFAR_MEAN, CIFAR_STD


class TensorImages(torch.utils.data.Dataset):
    """Normalised float (N, 3, 32, 32) images and labels, each image transformed on its own."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


class PilImages(torch.utils.data.Dataset):
    """uint8 (N, 32, 32, 3) images and labels, transformed per image like torchvision's CIFAR10."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def dataloader_epoch(loader: torch.utils.data.DataLoader, device: torch.device) -> None:
    for x, y in loader:
        x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def tensor_epoch(data, batch_size: int, seed: int) -> None:
    for _ in data.train_batches(batch_size, torch.Generator().manual_seed(seed)):
        pass


def main() -> None:
    from torchvision import transforms

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", nargs="+", type=int, default=[0, os.cpu_count() or 1])
    parser.add_argument("--recipe", action="store_true", help="also the torchvision CIFAR10 recipe (PIL, per epoch)")
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds (after one warm-up round)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="1,024 images, 0 workers, 1 round: proves it runs")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.workers, args.rounds, args.recipe = 1024, [0], 1, True
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine())
    images, labels = cifar_like_uint8(args.samples)
    tensors = cifar_like(args.samples, device)
    on_cpu = tensors.to(torch.device("cpu"))

    def loader(dataset: torch.utils.data.Dataset, workers: int) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                           num_workers=workers, pin_memory=device.type == "cuda",
                                           persistent_workers=workers > 0)

    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])
    recipe = transforms.Compose([augment, transforms.ToTensor(),
                                 transforms.Normalize(CIFAR_MEAN["cifar10"], CIFAR_STD["cifar10"])])
    epochs = {"tensors (batched crop + flip on the device)": lambda: tensor_epoch(tensors, args.batch_size, 0)}
    for w in args.workers:
        same = loader(TensorImages(on_cpu.x_train, on_cpu.y_train, augment), w)
        epochs[f"DataLoader, same normalised tensors, {w} workers"] = lambda ld=same: dataloader_epoch(ld, device)
        if args.recipe:
            pil = loader(PilImages(images, labels, recipe), w)
            epochs[f"DataLoader, torchvision recipe (PIL, normalised per epoch), {w} workers"] = \
                lambda ld=pil: dataloader_epoch(ld, device)
    result = paired(epochs, rounds=args.rounds, warmup=1, device=device)
    n = (args.samples // args.batch_size) * args.batch_size
    print(result.line())
    print(table(["pipeline", "samples/s", "seconds / tensors' seconds (min-max)"],
                [[side.name, f"{n / side.wall_median:,.0f}", str(side.wall_ratio)] for side in result.sides]))


if __name__ == "__main__":
    main()
