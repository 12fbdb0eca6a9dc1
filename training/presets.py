"""Named hyperparameter sets. Where each value comes from is in docs/hyperparameters.md.

Paper settings of SWAMP (Choi et al., ICLR 2024): 150 epochs per cycle on CIFAR (40 on ImageNet),
SWA over the last 25% of a cycle at constant LR 0.05, 20% pruning per cycle, 4 particles. The
``mnist1d`` preset is ours: sized to run on two CPU cores in a few minutes and to reach > 90%
sparsity (12 cycles: the last trains at density 0.8^11 = 8.6%).
"""

from __future__ import annotations

_CIFAR = {
    "batch_size": 128,
    "epochs": 150,
    "cycles": 10,
    "rewind_epochs": 2,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "swa_lr": 0.05,
}

_MNIST1D = {
    "dataset": "mnist1d",
    "batch_size": 128,
    "epochs": 16,
    "cycles": 12,
    "rewind_epochs": 8,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "swa_lr": 0.05,
}

PRESETS: dict[str, dict] = {
    "mnist1d": {"model": "cnn1d", **_MNIST1D},
    "mnist1d-mlp": {"model": "mlp", **_MNIST1D},
    "mnist1d-transformer": {"model": "transformer1d", **_MNIST1D},
    "cifar10-wrn28x2": {"dataset": "cifar10", "model": "wrn28x2", **_CIFAR},
    "cifar10-vgg19": {"dataset": "cifar10", "model": "vgg19", **_CIFAR},
    "cifar100-wrn28x2": {"dataset": "cifar100", "model": "wrn28x2", **_CIFAR},
    "cifar100-vgg19": {"dataset": "cifar100", "model": "vgg19", **_CIFAR},
    "imagenet-resnet50": {
        "dataset": "imagefolder",
        "model": "resnet50",
        "batch_size": 256,
        "epochs": 40,
        "cycles": 5,
        "rewind_epochs": 1,
        "lr": 0.1,
        "weight_decay": 1e-4,
        "swa_lr": 0.05,
    },
}

GENERIC_PRESET = "generic"
# Any other dataset (torchvision:NAME, PACKAGE.MODULE:CALLABLE): a plain SGD + SWA schedule; no model.
PRESETS[GENERIC_PRESET] = {"batch_size": 128, "epochs": 30, "cycles": 5, "rewind_epochs": 1, "lr": 0.1,
                           "weight_decay": 5e-4, "swa_lr": 0.05}

DEFAULT_PRESET = {
    "mnist1d": "mnist1d",
    "cifar10": "cifar10-wrn28x2",
    "cifar100": "cifar100-wrn28x2",
    "imagefolder": "imagenet-resnet50",
}
