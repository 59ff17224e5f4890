"""An exponential moving average of the model's weights (schedule.ema), on torch's AveragedModel.

After every optimizer step t (t = 1, 2, ...): average = d_t x average + (1 - d_t) x weights, with
d_t = decay x (1 - exp(-(t - 1) / warmup_iters)): the first update copies the weights (d_1 = 0) and
the early, fast-changing weights fade quickly (Ultralytics' ModelEMA and MMDetection's
ExpMomentumEMA have this warm-up). Buffers (BatchNorm statistics) are averaged the same way;
integer buffers are copied.

Evaluation, the best checkpoint and detect.test use the average (see detect/engine/loop.py:
`eval_model`, `checkpoint_state`): a checkpoint's `model` holds the averaged weights (what was
scored, what detect.test and runtime.load_from take), `raw_model` the trained ones a resume continues
from, `ema_updates` the number of updates, and `weights` says "ema".
"""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel


class WeightsEMA:
    def __init__(self, model: torch.nn.Module, decay: float, warmup_iters: int):
        self.decay, self.warmup_iters = float(decay), int(warmup_iters)
        self.done = 0  # updates so far, on the host (n_averaged lives on the model's device)
        self._d = 0.0  # the decay of the update in progress
        self.averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)
        self.averaged.eval()  # never trained itself: only evaluated

    @property
    def module(self) -> torch.nn.Module:
        """The averaged copy of the model (evaluate this one)."""
        return self.averaged.module

    def decay_at(self, done: int) -> float:
        """d for the update after `done` earlier updates."""
        if self.warmup_iters <= 0:
            return self.decay
        return self.decay * (1 - math.exp(-done / self.warmup_iters))

    def _average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], done: torch.Tensor) -> None:
        d = self._d
        floating = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floating:
            torch._foreach_lerp_([a for a, _ in floating], [c for _, c in floating], 1 - d)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)

    def update(self, model: torch.nn.Module) -> None:
        self._d = self.decay_at(self.done)  # computed here: reading n_averaged would wait for the GPU
        self.averaged.update_parameters(model)
        self.done += 1

    def restore(self, weights: dict, updates: int) -> None:
        """Continue from a checkpoint: its averaged weights (`model`) after `updates` updates."""
        self.module.load_state_dict(weights)
        self.averaged.n_averaged.fill_(int(updates))
        self.done = int(updates)
