"""Tickets and rewinding (``training.take_ticket``, ``training.rewind``): back to the ticket's weights under a
mask, with the optimizer's and the random generators' states on request, and a ticket no later training reaches."""

from __future__ import annotations

import dataclasses
import doctest
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training import Ticket, apply_masks, dense_masks, mask_optimizer, random_mask, rewind, take_ticket

API = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3))


def _masks(net: nn.Module) -> dict[str, torch.Tensor]:
    return random_mask(dense_masks(net), 0.5, torch.Generator().manual_seed(1))


def _train(net: nn.Module, opt: torch.optim.Optimizer, steps: int = 3) -> list[float]:
    """``steps`` steps on batches drawn from torch's global generator; the losses."""
    net.train()
    losses = []
    for _ in range(steps):
        x, y = torch.randn(5, 1, 8), torch.randint(0, 3, (5,))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_rewinding_restores_every_weight_and_buffer_exactly_and_zeros_the_pruned():
    net = _net()
    masks = _masks(net)
    at_ticket = {k: v.clone() for k, v in net.state_dict().items()}
    ticket = take_ticket(net)
    _train(net, torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9))
    assert not torch.equal(net.state_dict()["1.running_mean"], at_ticket["1.running_mean"])
    assert rewind(net, ticket, masks) is net
    state = net.state_dict()
    for name, value in at_ticket.items():
        expected = value * masks[name] if name in masks else value
        assert torch.equal(state[name], expected), name
    for name, mask in masks.items():
        assert bool((state[name][mask == 0] == 0).all()) and bool((state[name][mask == 1] != 0).all())
    rewind(net, ticket)  # without masks: the dense ticket
    assert _equal(net.state_dict(), at_ticket)


def test_the_ticket_is_independent_of_later_training_and_rewinds_any_number_of_times():
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    _train(net, opt, 2)  # the optimizer has moments at the ticket
    ticket = take_ticket(net, opt)
    kept = {k: v.clone() for k, v in ticket.state.items()}
    moments = {i: {k: v.clone() for k, v in s.items()} for i, s in ticket.optimizer["state"].items()}
    _train(net, opt, 3)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(7.0)
    assert _equal(ticket.state, kept)
    rewind(net, ticket, optimizer=opt)
    _train(net, opt, 3)  # in-place updates of the rewound optimizer's moments must not reach the ticket
    assert all(_equal(ticket.optimizer["state"][i], moments[i]) for i in moments)
    rewind(net, ticket, optimizer=opt)
    assert _equal(net.state_dict(), kept)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ticket.state = {}  # type: ignore[misc]


def test_the_optimizer_state_is_restored_so_training_after_a_rewind_repeats_bit_for_bit():
    net = _net()
    masks = _masks(net)
    apply_masks(net, masks)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    mask_optimizer(opt, net, masks)
    _train(net, opt, 2)
    ticket = take_ticket(net, opt, rng=True)
    adam = {i: {k: v.clone() for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}
    first = _train(net, opt, 3)
    after_first = {k: v.clone() for k, v in net.state_dict().items()}
    assert not torch.equal(opt.state_dict()["state"][0]["exp_avg"], adam[0]["exp_avg"])
    rewind(net, ticket, masks, optimizer=opt, rng=True)
    restored = opt.state_dict()["state"]
    assert restored.keys() == adam.keys()
    for i, s in adam.items():
        assert all(torch.equal(restored[i][k], s[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert _train(net, opt, 3) == first
    assert _equal(net.state_dict(), after_first)


def test_random_states_are_restored_only_when_asked():
    ticket = take_ticket(nn.Linear(1, 1), rng=True)
    draws = (torch.randn(3), random.random(), np.random.rand(2))
    plain = take_ticket(nn.Linear(1, 1))
    assert plain.rng is None and plain.optimizer is None
    rewind(nn.Linear(1, 1), ticket)  # rng=False: the generators run on
    assert not torch.equal(torch.randn(3), draws[0])
    rewind(nn.Linear(1, 1), ticket, rng=True)
    again = (torch.randn(3), random.random(), np.random.rand(2))
    assert torch.equal(again[0], draws[0]) and again[1] == draws[1] and np.array_equal(again[2], draws[2])
    if torch.cuda.is_available():
        ticket = take_ticket(nn.Linear(1, 1), rng=True)
        drawn = torch.randn(3, device="cuda")
        rewind(nn.Linear(1, 1), ticket, rng=True)
        assert torch.equal(torch.randn(3, device="cuda"), drawn)


def test_a_batchnorm_ticket_keeps_its_integer_step_count():
    net = _net()
    _train(net, torch.optim.SGD(net.parameters(), lr=0.1), 4)
    ticket = take_ticket(net)
    tracked = ticket.state["1.num_batches_tracked"]
    assert tracked.dtype == torch.long and int(tracked) == 4
    _train(net, torch.optim.SGD(net.parameters(), lr=0.1), 2)
    assert int(net.state_dict()["1.num_batches_tracked"]) == 6
    rewind(net, ticket)
    assert net.state_dict()["1.num_batches_tracked"].dtype == torch.long
    assert int(net.state_dict()["1.num_batches_tracked"]) == 4


def test_rewinding_refuses_what_the_ticket_does_not_hold_in_one_line():
    net = nn.Linear(2, 1)
    ticket = take_ticket(net)
    assert isinstance(ticket, Ticket)
    for kwargs, says in (({"optimizer": torch.optim.SGD(net.parameters(), lr=0.1)}, "take_ticket(model, optimizer)"),
                         ({"rng": True}, "rng=True"),
                         ({"masks": {"nope.weight": torch.ones(1)}}, "nope.weight")):
        with pytest.raises(ValueError, match=re.escape(says)) as error:
            rewind(net, ticket, **kwargs)
        assert "\n" not in str(error.value)


def test_the_documented_ticket_example_runs():
    section = API.read_text().split("### Tickets:", 1)[1].split("\n### ", 1)[0]
    example = re.search(r"```pycon\n(.*?)```", section, re.S).group(1)
    test = doctest.DocTestParser().get_doctest(example, {}, "docs/api.md (Tickets)", str(API), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0 and len(test.examples) > 5
