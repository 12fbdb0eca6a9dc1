"""Datasets as a uniform source of (input, label) batches on the training device.

Every dataset follows one protocol, :class:`Dataset` (:mod:`core.data.tensors`), and is rebuilt from
a JSON description (its *spec*, stored in every checkpoint) by :func:`load_dataset`:

- the toolkit's own (the registry :data:`core.data.names.BUILTIN`, where a new one is added): MNIST-1D
  (generated offline), CIFAR-10/100 (the official files, read without unpickling code), ImageFolder trees
  (Tiny-ImageNet, ImageNet; streamed, :mod:`core.data.imagefolder`);
- ``torchvision:NAME``: torchvision's image-classification datasets (:mod:`core.data.vision`, the
  supported ones in :data:`core.data.catalog.TORCHVISION`);
- ``PACKAGE.MODULE:CALLABLE``: a user factory returning (train, test) map-style datasets
  (:mod:`core.data.factory`), imported only with ``trust_code``;
- ``python:NAME``: map-style datasets handed over in Python (:func:`from_datasets`).

Small datasets live whole as tensors on the device (:class:`TensorDataset`); map-style datasets past
:data:`core.data.loader.MATERIALISE_LIMIT` stream through a DataLoader, with the same batches for a
seed (:mod:`core.data.loader`). docs/datasets.md lists every kind with its normalisation and
augmentation.
"""

from __future__ import annotations

from typing import Any

import torch

from core.data.catalog import PREFIX as TORCHVISION_PREFIX
from core.data.factory import from_datasets, load_factory
from core.data.mnist1d import MNIST1D_CLASSES, MNIST1D_LENGTH, load_mnist1d, mnist1d_spec
from core.data.names import BUILTIN, IN_MEMORY_PREFIX, builtin_spec, check_dataset_name, is_builtin
from core.data.tensors import Batch, Dataset, TensorDataset, random_crop_flip, subsample_indices
from core.errors import UserError

__all__ = ["MNIST1D_CLASSES", "MNIST1D_LENGTH", "Batch", "Dataset", "TensorDataset", "dataset_spec", "from_datasets",
           "load_dataset", "load_mnist1d", "mnist1d_spec", "random_crop_flip", "subsample_indices"]


def dataset_spec(cfg: Any) -> dict[str, Any]:
    """The JSON-able description of ``cfg``'s dataset, from which :func:`load_dataset` builds it.

    The toolkit's own datasets: ``{"name", "data_dir"}`` (MNIST-1D adds its generator arguments, imagefolder
    ``workers``); ``torchvision:NAME`` and ``PACKAGE.MODULE:CALLABLE`` add ``kwargs`` (``--dataset-kwargs``)
    and ``workers``. What checkpoints store is the loaded dataset's ``spec``, which keeps ``workers`` only
    where the data streams.

    Example:
        >>> from types import SimpleNamespace
        >>> dataset_spec(SimpleNamespace(dataset="torchvision:FakeData", data_dir="data", workers=2,
        ...                              dataset_kwargs_dict={"size": 64}))
        {'name': 'torchvision:FakeData', 'data_dir': 'data', 'kwargs': {'size': 64}, 'workers': 2}
    """
    if is_builtin(cfg.dataset):
        if cfg.dataset_kwargs_dict:
            raise UserError(f"--dataset-kwargs is for torchvision:NAME and PACKAGE.MODULE:CALLABLE datasets; "
                            f"--dataset {cfg.dataset} takes none")
        return builtin_spec(cfg.dataset, cfg.data_dir, cfg.workers)
    return {"name": cfg.dataset, "data_dir": cfg.data_dir, "kwargs": cfg.dataset_kwargs_dict, "workers": cfg.workers}


def load_dataset(spec: dict[str, Any], device: torch.device | str = "cpu", download: bool = False, *,
                 trust_code: bool = False) -> Dataset:
    """Build the dataset a spec describes, on ``device``.

    Args:
        spec: a :func:`dataset_spec` (or a checkpoint's, checked by :mod:`core.artifacts.schema`); its
            ``data_dir`` is where the data is read.
        device: where batches are delivered.
        download: let torchvision fetch missing CIFAR or ``torchvision:`` files (needs internet).
        trust_code: allow importing a ``PACKAGE.MODULE:CALLABLE`` factory (the user's consent; a spec read
            from a file does not give it).

    Raises:
        UserError: unknown or absent data, a refused import, data that is not what the protocol says (one line).
    """
    name = spec.get("name")
    device = torch.device(device)
    if is_builtin(name):
        return BUILTIN[name].load()(spec, device, download)
    if not isinstance(name, str):
        raise UserError(f"a dataset spec needs a name, not {name!r}")
    check_dataset_name(name)  # refuses unknown names, with the close matches
    if name.startswith(IN_MEMORY_PREFIX):
        raise UserError(f"dataset {name} was handed to training.run_swamp as Python objects (or not named to "
                        "swamp_cycles), so nothing can load it from its name; name it to the landscape tools with "
                        "--dataset NAME, or pass the data to the landscape library functions yourself (docs/api.md)")
    if name.startswith(TORCHVISION_PREFIX):
        from core.data.vision import load_torchvision

        return load_torchvision(spec, device, download)
    return load_factory(spec, device, trust_code=trust_code)
