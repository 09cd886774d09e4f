"""Roll back a training iteration whose loss jumps far above the recent ones, and slow the controller down.

Why: at the published controller lr (1e-3), two of four CPU runs diverged within one iteration and never came back
(docs/training-rounds.md, round 10): r24's joint run at iteration 367 (refine loss 4.9 -> 727) and r25's successive
run at iteration 81 (6.6 -> 56). Once the motion leaves w_avg +- 5, the ws clamp passes no gradient, so nothing pulls it
back; gradient clipping does not prevent it, because Adam's step size does not shrink with a clipped gradient. Each
diverged run's ablation twin trained level, so which schedule won the comparison was decided by which one blew up.
The ordinary spikes of the runs that trained level stayed under 1.9x the running median (r24's successive run: 9.1
against ~5), so the default threshold, 3x, separates the two. (One run at 5e-4, r23's seed-1 joint run, jumped to
25x for two iterations and came back by itself; the guard rolls such iterations back too.)

Use (what `otavatar.training.decouple.train_controller` does):

    guard = SpikeGuard(factor=3.0)
    for each iteration:
        snapshot = Snapshot([controller, generator], [opt_c, opt_g])     # before the iteration changes them
        loss = iteration(lr_controller=base_lr * guard.lr_scale)
        if guard.is_spike(loss):
            snapshot.restore(); guard.reject(loss, step)    # discard its codes and EMA update too
        else:
            guard.accept(loss)

A rejected iteration multiplies the controller lr by `lr_factor` for the rest of the run (0.5: round 10's runs at
5e-4, half the published lr, never diverged in four runs). `max_consecutive` rejections in a row raise, so a run that
cannot get past a spike stops instead of spinning.
"""
from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

__all__ = ["SpikeGuard", "Snapshot"]

_PREFIX = "spike_guard."          # keys of the guard's state among a run's extra tensors


@dataclass
class SpikeGuard:
    factor: float = 3.0               # a loss above factor x the median of the recent accepted ones is a spike
    lr_factor: float = 0.5            # the controller lr scale is multiplied by this at every rejection
    window: int = 25                  # recent accepted losses kept
    min_history: int = 5              # no spike is called before this many accepted losses
    max_consecutive: int = 5          # this many rejections in a row raise FloatingPointError
    history: list[float] = field(default_factory=list)
    lr_scale: float = 1.0
    rollbacks: int = 0
    consecutive: int = 0

    def __post_init__(self) -> None:
        if not self.factor > 1:
            raise ValueError(f"the spike factor must be > 1, got {self.factor}")
        if not 0 < self.lr_factor <= 1:
            raise ValueError(f"the spike lr factor must be in (0, 1], got {self.lr_factor}")
        if self.window < 1 or not 1 <= self.min_history <= self.window or self.max_consecutive < 1:
            raise ValueError(f"need window >= min_history >= 1 and max_consecutive >= 1, got {self.window}, "
                             f"{self.min_history}, {self.max_consecutive}")

    def is_spike(self, loss: float) -> bool:
        """A non-finite loss always is; a finite one once min_history losses were accepted."""
        if not math.isfinite(loss):
            return True
        if len(self.history) < self.min_history:
            return False
        return loss > self.factor * statistics.median(self.history)

    def accept(self, loss: float) -> None:
        self.history = (self.history + [float(loss)])[-self.window:]
        self.consecutive = 0

    def reject(self, loss: float, step: int, recovery: str = "lower the learning rates") -> None:
        """Count a rolled-back iteration and lower the lr scale; raise after max_consecutive in a row, the error
        ending with `recovery` (what the caller's user can do next)."""
        self.rollbacks += 1
        self.consecutive += 1
        self.lr_scale *= self.lr_factor
        if self.consecutive >= self.max_consecutive:
            median = statistics.median(self.history) if self.history else math.nan
            raise FloatingPointError(
                f"iteration {step}: {self.consecutive} iterations in a row were rolled back (last loss {loss:.4g}, "
                f"recent median {median:.4g}, lr scale now {self.lr_scale:.3g}); {recovery}")

    # -- persistence with a run's extra tensors ---------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"{_PREFIX}history": torch.tensor(self.history, dtype=torch.float64),
                f"{_PREFIX}lr_scale": torch.tensor(self.lr_scale, dtype=torch.float64),
                f"{_PREFIX}rollbacks": torch.tensor(self.rollbacks, dtype=torch.int64)}

    def load_state_tensors(self, extra: Mapping[str, torch.Tensor]) -> None:
        """Restore what `state_tensors` saved; a run saved before the guard existed leaves it fresh."""
        if f"{_PREFIX}lr_scale" not in extra:
            return
        self.history = [float(x) for x in extra[f"{_PREFIX}history"].tolist()][-self.window:]
        self.lr_scale = float(extra[f"{_PREFIX}lr_scale"])
        self.rollbacks = int(extra[f"{_PREFIX}rollbacks"])
        self.consecutive = 0


class Snapshot:
    """Copies of some modules' and optimisers' states, to put back with `restore`."""

    def __init__(self, modules: Sequence[torch.nn.Module], optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self._modules = [(m, {k: v.detach().clone() for k, v in m.state_dict().items()}) for m in modules]
        self._optimizers = [(o, copy.deepcopy(o.state_dict())) for o in optimizers]

    def restore(self) -> None:
        with torch.no_grad():
            for module, state in self._modules:
                module.load_state_dict(state)
        for optimizer, state in self._optimizers:
            optimizer.load_state_dict(state)
