"""ImageFolder datasets (Tiny-ImageNet / ImageNet layout: ``DIR/train/CLASS/*.JPEG``, ``DIR/val/...``).

Too large to hold on the device, so batches stream through a DataLoader (:class:`StreamingDataset`) with
the standard ImageNet transforms (random-resized crop 224 + flip for training; resize 256, centre crop
224 for evaluation). The training order comes from the caller's generator, so it is seeded per
particle like the tensor datasets; so are the random transforms when ``workers`` > 0 (worker seeds are
drawn from the generator each epoch; with 0 workers they use torch's global RNG).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.data.loader import SampleCollator, StreamingDataset
from core.data.names import BUILTIN
from core.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_imagefolder(spec: dict[str, Any], device: torch.device, download: bool = False) -> StreamingDataset:
    """Train/val ImageFolders under ``spec["data_dir"]`` (val may be called ``val`` or ``test``), streamed with
    ``spec["workers"]`` (default 4) worker processes at ``spec["image_size"]`` (default 224) pixels. Nothing is
    downloaded (``download`` is the registry's signature)."""
    from torchvision import datasets, transforms

    root = Path(spec["data_dir"])
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise UserError(f"imagefolder needs {root}/train/CLASS/* and {root}/val/CLASS/* image folders")
    size = int(spec.get("image_size", BUILTIN["imagefolder"].fields["image_size"].default))
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), norm])
    eval_tf = transforms.Compose([transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size),
                                  transforms.ToTensor(), norm])
    try:
        train = datasets.ImageFolder(str(root / "train"), train_tf)
        train_eval = datasets.ImageFolder(str(root / "train"), eval_tf)
        test = datasets.ImageFolder(str(test_dir), eval_tf)
    except (FileNotFoundError, RuntimeError) as err:
        raise UserError(f"cannot read image folders under {root}: {err}") from None
    if train.classes != test.classes:
        raise UserError(f"{root}/train and {test_dir} have different class folders")
    return StreamingDataset(spec, len(train.classes), train, test, device=device, workers=int(spec.get("workers", 4)),
                            collator=SampleCollator("imagefolder"), train_eval=train_eval, sample_random=True)
