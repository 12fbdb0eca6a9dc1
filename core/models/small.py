"""Models for MNIST-1D (Greydanus 2020): sequences of 40 values, 10 classes."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ResidualMLP(nn.Module):
    """The MLP of the MNIST-1D paper's lottery-ticket experiment (Greydanus & Kobak 2024, notebook
    ``lottery-tickets.ipynb``): h_1 = relu(W_1 x + b_1), h_2 = h_1 + relu(W_2 h_1 + b_2), y = W_3 h_2 + b_3."""

    def __init__(self, num_classes: int = 10, length: int = 40, hidden: int = 100):
        super().__init__()
        self.linear1 = nn.Linear(length, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.linear1(x.flatten(1)))
        h = h + torch.relu(self.linear2(h))
        return self.linear3(h)


def mlp(num_classes: int = 10, length: int = 40, hidden: int = 100, residual: bool = False) -> nn.Module:
    """Two hidden ReLU layers; the MNIST-1D baseline MLP (about 64% test accuracy here).

    Args:
        num_classes: outputs.
        length: inputs (MNIST-1D: 40).
        hidden: width of both hidden layers.
        residual: the second hidden layer adds its input (:class:`ResidualMLP`, the lottery-ticket MLP of the
            MNIST-1D paper; with ``hidden=500``).

    Returns:
        An ``nn.Sequential`` (Flatten, Linear, ReLU, Linear, ReLU, Linear), or a :class:`ResidualMLP`.

    Example:
        >>> [n for n, _ in mlp(hidden=8).named_parameters()][:2], mlp(hidden=8, residual=True)(torch.ones(2, 40)).shape
        (['1.weight', '1.bias'], torch.Size([2, 10]))
    """
    if residual:
        return ResidualMLP(num_classes, length, hidden)
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
