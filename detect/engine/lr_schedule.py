"""MMDetection's step schedule with linear warmup, evaluated per iteration."""

from __future__ import annotations

import bisect


def lr_factor(iteration: int, iters_per_epoch: int, warmup_iters: int, warmup_ratio: float,
              milestones: list[int], gamma: float) -> float:
    """Multiplier of the base lr at `iteration` (0-based, counted over the whole run).

    Steps: x gamma once the epoch reaches each milestone (milestones [8, 11] -> epochs 0-7 at the
    base lr, 8-10 at 0.1x, 11+ at 0.01x). Warmup (MMDetection's "linear"): the first
    `warmup_iters` iterations ramp from `warmup_ratio` to 1 times the stepped lr.
    """
    epoch = iteration // max(1, iters_per_epoch)
    factor = gamma ** bisect.bisect_right(sorted(milestones), epoch)
    if iteration < warmup_iters:
        k = (1 - iteration / warmup_iters) * (1 - warmup_ratio)
        factor *= 1 - k
    return factor
