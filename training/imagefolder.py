"""ImageFolder datasets (Tiny-ImageNet / ImageNet layout: ``DIR/train/CLASS/*.JPEG``, ``DIR/val/...``).

Too large to hold on the device, so batches stream through a torchvision DataLoader with the
standard ImageNet transforms (random-resized crop 224 + flip for training; resize 256, centre crop
224 for evaluation). The training order comes from the caller's generator, so it is seeded per
particle like the tensor datasets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from training.errors import UserError

Batch = tuple[Tensor, Tensor]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFolderDataset:
    """Train/val ImageFolders under ``spec["data_dir"]`` (val may be called ``val`` or ``test``)."""

    def __init__(self, spec: dict[str, Any], device: torch.device):
        from torchvision import datasets, transforms

        root = Path(spec["data_dir"])
        test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
        if not (root / "train").is_dir() or test_dir is None:
            raise UserError(f"imagefolder needs {root}/train/CLASS/* and {root}/val/CLASS/* image folders")
        size = int(spec.get("image_size", 224))
        norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                       transforms.ToTensor(), norm])
        eval_tf = transforms.Compose([transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size),
                                      transforms.ToTensor(), norm])
        try:
            self._train = datasets.ImageFolder(str(root / "train"), train_tf)
            self._train_eval = datasets.ImageFolder(str(root / "train"), eval_tf)
            self._test = datasets.ImageFolder(str(test_dir), eval_tf)
        except (FileNotFoundError, RuntimeError) as err:
            raise UserError(f"cannot read image folders under {root}: {err}") from None
        if self._train.classes != self._test.classes:
            raise UserError(f"{root}/train and {test_dir} have different class folders")
        self.spec = spec
        self.num_classes = len(self._train.classes)
        self.device = device
        self.workers = int(spec.get("workers", 4))

    def size(self, split: str) -> int:
        return len(self._train if split == "train" else self._test)

    def _loader(self, dataset: Any, batch_size: int, sampler: Any, drop_last: bool,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                                             num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                             generator=generator)
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One shuffled epoch. With ``workers`` > 0 the augmentation is seeded too (worker seeds derive
        from a generator drawn from ``generator``); with 0 workers it uses torch's global RNG."""
        order = torch.randperm(len(self._train), generator=generator).tolist()
        worker_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        yield from self._loader(self._train, batch_size, order, drop_last=True, generator=worker_gen)

    def eval_batches(self, split: str, batch_size: int, indices: Tensor | None = None) -> Iterator[Batch]:
        dataset = self._train_eval if split == "train" else self._test
        order = range(len(dataset)) if indices is None else indices.tolist()
        yield from self._loader(dataset, batch_size, list(order), drop_last=False)
