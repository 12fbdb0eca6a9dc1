"""The on-device tensor pipeline against a torchvision DataLoader pipeline, on the same CIFAR-sized data.

Both produce one shuffled epoch of normalised, augmented (4-pixel pad + random 32x32 crop, random
horizontal flip) batches of CIFAR-10-shaped images on the training device:

* tensors: :class:`core.data.TensorDataset` -- the images held normalised on the device, shuffling
  and augmentation as batched tensor operations (what the toolkit uses for CIFAR);
* DataLoader: the standard torchvision recipe -- uint8 HWC images, per-image PIL ``RandomCrop(32, 4)``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` (as ``torchvision.datasets.CIFAR10`` applies
  them), ``DataLoader(shuffle, drop_last, num_workers=W, pin_memory on GPUs)``, batches moved to the
  device.

The images are random bytes (no CIFAR download here): the pipelines' cost does not depend on the
pixel values. Prints samples per second (median of ``--repeats``) and the speed-up. From the
repository root: ``python -m benchmarks.bench_data [--device cuda] [--workers 0 2]``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from benchmarks.harness import alternating, cifar_like, cifar_like_uint8, machine, table
from core.data.cifar import CIFAR_MEAN, CIFAR_STD


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine())
    images, labels = cifar_like_uint8(args.samples)
    tensors = cifar_like(args.samples, device)
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN["cifar10"],
                                                                                CIFAR_STD["cifar10"])])
    loaders = [torch.utils.data.DataLoader(PilImages(images, labels, transform), batch_size=args.batch_size,
                                           shuffle=True, drop_last=True, num_workers=w,
                                           pin_memory=device.type == "cuda", persistent_workers=w > 0)
               for w in args.workers]
    epochs = [lambda: tensor_epoch(tensors, args.batch_size, 0)]
    epochs += [lambda loader=loader: dataloader_epoch(loader, device) for loader in loaders]
    seconds = alternating(epochs, args.repeats, device)
    n = (args.samples // args.batch_size) * args.batch_size
    rows = [["tensors (batched crop + flip on the device)", f"{n / seconds[0]:,.0f}", "1.0"]]
    rows += [[f"torchvision DataLoader, {w} workers", f"{n / s:,.0f}", f"{s / seconds[0]:.1f}"]
             for w, s in zip(args.workers, seconds[1:], strict=True)]
    print(table(["pipeline", "samples/s", "tensors' speed-up"], rows))


if __name__ == "__main__":
    main()
