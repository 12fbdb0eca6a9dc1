"""The averages SWAMP and SWA publish (core.averaging): exact means, masks, the SWA window, the running mean and
its resumption, and BatchNorm recalibration as torch.optim.swa_utils computes them. Each test runs in
milliseconds."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim import swa_utils

from core.averaging import SWA, RunningAverage, average_states, has_batchnorm, masked_state, recalibrate_batchnorm


def test_average_states_is_the_mean_with_integer_entries_from_the_first():
    states = [{"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}, {"w": torch.tensor([3.0, 4.0]),
                                                                      "n": torch.tensor(5)},
              {"w": torch.tensor([8.0, -6.0]), "n": torch.tensor(7)}]
    avg = average_states(states)
    assert avg["w"].tolist() == [4.0, 0.0] and int(avg["n"]) == 3
    avg["n"] += 1  # a copy, not the first state's tensor
    assert int(states[0]["n"]) == 3
    assert average_states(states[:1])["w"].tolist() == [1.0, 2.0]
    masked = average_states(states, {"w": torch.tensor([0.0, 1.0])})
    assert masked["w"].tolist() == [0.0, 0.0] and int(masked["n"]) == 3


def test_masked_state_multiplies_only_the_masked_entries():
    state = {"a": torch.tensor([2.0, 3.0]), "b": torch.tensor([4.0])}
    out = masked_state(state, {"a": torch.tensor([1.0, 0.0])})
    assert out["a"].tolist() == [2.0, 0.0] and out["b"] is state["b"]
    assert masked_state(state, None)["a"] is state["a"]


def test_running_average_is_the_mean_of_its_snapshots_and_resumes():
    snaps = [{"w": torch.tensor([float(v)]), "n": torch.tensor(i)} for i, v in enumerate((1, 2, 6, 11))]
    avg = RunningAverage()
    for s in snaps:
        avg.update(s)
    assert avg.state["w"].tolist() == [5.0] and int(avg.state["n"]) == 3 and avg.count == 4
    snaps[0]["w"] += 100  # the snapshots were copied
    assert avg.state["w"].tolist() == [5.0]
    resumed = RunningAverage({"w": torch.tensor([3.0]), "n": torch.tensor(2)}, count=3)  # 1, 2, 6
    resumed.update(snaps[3])
    assert resumed.state["w"].tolist() == [5.0] and resumed.count == 4 and int(resumed.state["n"]) == 3
    source = {"w": torch.tensor([1.0])}
    copy = RunningAverage(source, count=1)
    source["w"] += 1
    assert copy.state["w"].tolist() == [1.0]
    assert (RunningAverage().state, RunningAverage().count) == ({}, 0)


def test_swa_window_is_the_last_fraction_of_the_updates():
    assert [SWA(10, 0.25).start, SWA(10, 0.35).start, SWA(3, 0.1).start, SWA(4, 1.0).start, SWA(1).start] == [
        8, 6, 2, 0, 0]
    assert SWA(8).start == 6  # default fraction 1/4


def test_swa_averages_exactly_the_window_and_matches_averaged_model():
    net = nn.Linear(2, 1)
    swa = SWA(total=5, fraction=0.6, masks={"weight": torch.tensor([[1.0, 0.0]])})
    reference = swa_utils.AveragedModel(net)  # its first update_parameters copies, the later ones average
    taken = []
    for t in range(5):
        with torch.no_grad():
            net.weight.copy_(torch.tensor([[t + 1.0, -t - 1.0]]))
            net.bias.fill_(10.0 * t)
        taken.append(swa.update(net))
        if t >= 2:
            reference.update_parameters(net)
    assert taken == [False, False, True, True, True] and (swa.count, swa.seen) == (3, 5)
    state = swa.state()
    assert state["weight"].tolist() == [[4.0, 0.0]] and state["bias"].tolist() == [30.0]
    assert torch.equal(state["bias"], reference.module.bias.detach())
    averaged = swa.averaged_model(net)
    assert int(averaged.n_averaged) == 3 and averaged.module.weight.tolist() == [[4.0, 0.0]]
    target = nn.Linear(2, 1)
    assert swa.load_into(target) is target and target.weight.tolist() == [[4.0, 0.0]]


def test_swa_refuses_bad_settings_and_an_empty_average():
    for total in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="total must be a positive integer"):
            SWA(total)
    for fraction in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\]"):
            SWA(4, fraction)
    swa = SWA(4, 0.5)
    swa.update(nn.Linear(1, 1))
    with pytest.raises(ValueError, match="SWA has no snapshot yet: 1 updates seen, the window starts at 2"):
        swa.state()


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.3), nn.ReLU(), nn.Linear(4, 2),
                         nn.BatchNorm1d(2))


def test_recalibrate_batchnorm_is_torch_update_bn():
    batches = [torch.randn(16, 3) * 2 + 1 for _ in range(3)] + [torch.randn(5, 3)]
    ours, theirs = _bn_net(), _bn_net()
    recalibrate_batchnorm(ours, [(b, torch.zeros(len(b))) for b in batches])
    swa_utils.update_bn(batches, theirs)
    for mine, ref in zip(ours.modules(), theirs.modules(), strict=True):
        if isinstance(mine, nn.BatchNorm1d):
            assert torch.allclose(mine.running_mean, ref.running_mean, atol=1e-6)
            assert torch.allclose(mine.running_var, ref.running_var, atol=1e-6)
            assert int(mine.num_batches_tracked) == int(ref.num_batches_tracked) == 4
    assert [m.momentum for m in ours.modules() if isinstance(m, nn.BatchNorm1d)] == [0.3, 0.1]
    assert not ours.training
    batch_means = torch.stack([ours[0](b).mean(0) for b in batches])  # the average over batches, not samples
    assert torch.allclose(ours[1].running_mean, batch_means.mean(0), atol=1e-5)


def test_recalibration_leaves_a_model_without_batchnorm_alone():
    net = nn.Sequential(nn.Linear(2, 2))
    net.train()
    recalibrate_batchnorm(net, [torch.randn(4, 2)])
    assert net.training
    assert not has_batchnorm(net) and has_batchnorm(_bn_net()) and has_batchnorm(nn.BatchNorm2d(3))


def test_swa_load_into_recalibrates_given_data():
    net = _bn_net()
    swa = SWA(1, 1.0)
    swa.update(net)
    x = torch.randn(32, 3)
    swa.load_into(net, [x])
    assert torch.allclose(net[1].running_mean, net[0](x).mean(0), atol=1e-5)
