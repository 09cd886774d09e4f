"""The spike guard's decisions and state, and a snapshot's restore."""
from __future__ import annotations

import math

import pytest
import torch

from otavatar.training.spike_guard import Snapshot, SpikeGuard


def _guard_with(losses, **kw):
    guard = SpikeGuard(**kw)
    for loss in losses:
        guard.accept(loss)
    return guard


def test_a_spike_is_judged_against_the_median_of_the_recent_accepted_losses():
    guard = _guard_with([5.0, 5.2, 4.8, 5.1, 9.0])          # median 5.1: one ordinary spike moves it little
    assert not guard.is_spike(15.0)
    assert guard.is_spike(15.4)                              # > 3 x 5.1
    assert guard.is_spike(math.nan) and guard.is_spike(math.inf)


def test_no_finite_spike_is_called_before_enough_history():
    guard = _guard_with([1.0] * 4)
    assert not guard.is_spike(1e6)
    assert guard.is_spike(math.nan)                          # a non-finite loss always is
    guard.accept(1.0)
    assert guard.is_spike(1e6)


def test_the_history_keeps_only_the_window():
    guard = _guard_with([100.0] * 25 + [1.0] * 25)
    assert guard.history == [1.0] * 25 and guard.is_spike(3.5)


def test_each_rejection_lowers_the_lr_scale_and_too_many_in_a_row_raise():
    guard = _guard_with([1.0] * 5, max_consecutive=3)
    guard.reject(50.0, step=6)
    guard.reject(50.0, step=7)
    assert guard.lr_scale == 0.25 and guard.rollbacks == 2
    guard.accept(1.0)                                       # the streak resets; the scale stays
    guard.reject(50.0, step=9)
    guard.reject(50.0, step=10)
    with pytest.raises(FloatingPointError, match="3 iterations in a row were rolled back"):
        guard.reject(50.0, step=11)


def test_state_round_trips_through_tensors_and_an_old_run_leaves_it_fresh():
    guard = _guard_with([2.0, 3.0, 4.0])
    guard.reject(99.0, step=4)
    restored = SpikeGuard()
    restored.load_state_tensors(guard.state_tensors())
    assert (restored.history, restored.lr_scale, restored.rollbacks) == ([2.0, 3.0, 4.0], 0.5, 1)
    fresh = SpikeGuard()
    fresh.load_state_tensors({"ema_controller.weight": torch.zeros(1)})
    assert (fresh.history, fresh.lr_scale, fresh.rollbacks) == ([], 1.0, 0)


@pytest.mark.parametrize("kw, match", [({"factor": 1.0}, "factor"), ({"lr_factor": 0.0}, "lr factor"),
                                       ({"window": 3, "min_history": 5}, "window")])
def test_invalid_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        SpikeGuard(**kw)


def test_snapshot_restores_modules_and_optimiser_state():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    moments = opt.state_dict()["state"][0]["exp_avg"].clone()
    snapshot = Snapshot([net], [opt])
    for _ in range(3):
        opt.zero_grad()
        (net(torch.randn(4, 3)) ** 2).sum().backward()
        opt.step()
    snapshot.restore()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, weights[k], atol=0, rtol=0)
    torch.testing.assert_close(opt.state_dict()["state"][0]["exp_avg"], moments, atol=0, rtol=0)
    assert int(opt.state_dict()["state"][0]["step"]) == 1
