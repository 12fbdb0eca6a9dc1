"""Evaluation: loss and accuracy of a model, and of an ensemble of models (mean of softmaxes).

Batches follow :mod:`core.batch` (tensors, ``(inputs, targets)`` tuples, mappings with ``"labels"``); class
scores are the model's outputs or their ``logits`` entry (:func:`core.batch.logits_of`). Accuracy is defined
for class labels only: :func:`predict`, :func:`score` and :func:`evaluate` take integer class targets;
:func:`mean_loss` measures any loss (regression, language modelling) and reports no accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from core.batch import apply_model, batch_length, batch_parts, logits_of


@dataclass(frozen=True)
class Evaluation:
    """Mean loss and accuracy (a fraction in [0, 1]) over one data set: the cross-entropy of a split of class
    labels, or the mean of another loss with ``acc`` None (:func:`mean_loss`; in :mod:`landscape`, ``acc`` is
    None when the outputs are not class logits: 2-D outputs and 1-D integer targets)."""

    loss: float
    acc: float | None


def _logits(model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
    inputs, targets = batch_parts(batch)
    return logits_of(apply_model(model, inputs)).float(), targets


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Any]) -> tuple[Tensor, Tensor]:
    """Log-softmax outputs (float32) and labels over all batches, model in eval mode."""
    model.eval()
    log_probs, labels = [], []
    for batch in batches:
        logits, y = _logits(model, batch)
        log_probs.append(torch.log_softmax(logits, dim=1))
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
def evaluate(model: nn.Module, batches: Iterable[Any]) -> Evaluation:
    """Loss and accuracy of ``model`` on ``batches`` of class labels (streamed: no probabilities kept)."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for batch in batches:
        logits, y = _logits(model, batch)
        total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        count += len(y)
    return Evaluation(total_loss / count, correct / count)


@torch.no_grad()
def mean_loss(model: nn.Module, batches: Iterable[Any], loss_of: Callable[[nn.Module, Any], Tensor]) -> Evaluation:
    """The mean loss over samples, (1/N) sum_b n_b * loss_of(model, b) with n_b the samples of batch b
    (:func:`core.batch.batch_length`), model in eval mode; no accuracy (``acc`` None).

    ``loss_of(model, batch)`` is a batch's mean loss (a regression's squared error, a language model's mean
    token loss: its batches then weigh by sequences, not by tokens).

    Example:
        >>> net = nn.Linear(2, 1, bias=False)
        >>> _ = net.weight.data.fill_(1.0)
        >>> x, y = torch.ones(3, 2), torch.zeros(3, 1)
        >>> mse = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])
        >>> mean_loss(net, [(x[:2], y[:2]), (x[2:], y[2:] + 1)], mse)  # (2 * 4 + 1 * 1) / 3
        Evaluation(loss=3.0, acc=None)
    """
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        n = batch_length(batch)
        total += float(loss_of(model, batch)) * n
        count += n
    return Evaluation(total / count, None)
