"""Evaluation: loss and accuracy of a model, and of an ensemble of models (mean of softmaxes)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Evaluation:
    """Mean loss and accuracy (a fraction in [0, 1]) over one data set: here the cross-entropy of a split;
    in :mod:`landscape`, the mean of any ``loss_fn``, with ``acc`` None when the outputs are not class logits
    (2-D outputs and 1-D integer targets)."""

    loss: float
    acc: float | None


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Log-softmax outputs (float32) and labels over all batches, model in eval mode."""
    model.eval()
    log_probs, labels = [], []
    for x, y in batches:
        log_probs.append(torch.log_softmax(model(x).float(), dim=1))
        labels.append(y)
    return torch.cat(log_probs), torch.cat(labels)


def score(log_probs: Tensor, labels: Tensor) -> Evaluation:
    """Mean negative log-likelihood and accuracy of the argmax."""
    nll = -log_probs.gather(1, labels[:, None]).mean()
    acc = (log_probs.argmax(1) == labels).float().mean()
    return Evaluation(float(nll), float(acc))


def ensemble_log_probs(members: list[Tensor]) -> Tensor:
    """log of the mean of the members' softmax outputs: logsumexp_n(log p_n) - log N."""
    return torch.logsumexp(torch.stack(members), dim=0) - torch.log(torch.tensor(float(len(members))))


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> Evaluation:
    """Loss and accuracy of ``model`` on ``batches`` (streamed: no probabilities kept)."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for x, y in batches:
        logits = model(x).float()
        total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        count += len(y)
    return Evaluation(total_loss / count, correct / count)
