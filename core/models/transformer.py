"""A small Transformer encoder for MNIST-1D (Vaswani et al. 2017; pre-LayerNorm blocks, Xiong et al. 2020).

The 40-step signal is cut into ``length / patch`` non-overlapping patches (ViT-style, Dosovitskiy et
al. 2021), each embedded by one linear map plus a learned position embedding; ``depth`` pre-norm
blocks of multi-head self-attention and a ReLU MLP follow, then a final LayerNorm, the mean over
tokens and a linear classifier. Every projection (patch embedding, the fused query/key/value map, the
attention output, both MLP layers, the classifier) is an ``nn.Linear``, so global magnitude pruning
prunes all of them (:mod:`core.pruning`); LayerNorms and the position embedding are never pruned.
With the defaults it has 26,506 weights (10 classes).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EncoderBlock(nn.Module):
    """x + MHSA(LN(x)), then x + MLP(LN(x)); attention by ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class Transformer1d(nn.Module):
    """Patch embedding, ``depth`` encoder blocks, LayerNorm, mean over tokens, linear classifier."""

    def __init__(self, num_classes: int = 10, length: int = 40, patch: int = 4, dim: int = 32, depth: int = 3,
                 heads: int = 4, hidden: int = 64):
        super().__init__()
        if length % patch:
            raise ValueError(f"length ({length}) must be a multiple of patch ({patch})")
        self.patch = patch
        self.embed = nn.Linear(patch, dim)
        self.position = nn.Parameter(torch.randn(length // patch, dim) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x.reshape(x.shape[0], -1, self.patch)) + self.position
        return self.classifier(self.norm(self.blocks(tokens)).mean(1))


def transformer1d(num_classes: int = 10, length: int = 40, patch: int = 4, dim: int = 32, depth: int = 3,
                  heads: int = 4, hidden: int = 64) -> nn.Module:
    """The MNIST-1D Transformer encoder (see the module docstring).

    Example:
        >>> net = transformer1d()
        >>> net(torch.randn(2, 40)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([2, 10]), 26506)
    """
    return Transformer1d(num_classes, length, patch, dim, depth, heads, hidden)
