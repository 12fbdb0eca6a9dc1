"""Models for MNIST-1D (Greydanus 2020): sequences of 40 values, 10 classes."""

from __future__ import annotations

from torch import Tensor, nn


def mlp(num_classes: int = 10, length: int = 40, hidden: int = 100) -> nn.Module:
    """Two hidden ReLU layers; the MNIST-1D baseline MLP (about 64% test accuracy here)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(length, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))


class CNN1d(nn.Module):
    """Four 1-D convolutions with BatchNorm (three stride-2) and a linear classifier."""

    def __init__(self, num_classes: int = 10, length: int = 40, channels: int = 32):
        super().__init__()
        c = channels

        def block(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
            return [nn.Conv1d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm1d(cout),
                    nn.ReLU()]

        self.features = nn.Sequential(*block(1, c, 5, 1), *block(c, c, 3, 2), *block(c, 2 * c, 3, 2),
                                      *block(2 * c, 2 * c, 3, 2))
        out_len = length
        for _ in range(3):
            out_len = (out_len - 1) // 2 + 1
        self.classifier = nn.Linear(2 * c * out_len, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x.unsqueeze(1)).flatten(1))


def cnn1d(num_classes: int = 10, length: int = 40, channels: int = 32) -> nn.Module:
    return CNN1d(num_classes, length, channels)
