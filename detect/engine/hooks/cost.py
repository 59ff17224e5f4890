"""CostHook: at the end of a finished run, the evaluated weights' parameters, FLOPs per image and
latency (detect/engine/cost.py) into summary.json's `cost`, so `detect.runs` can set every run's score
beside its price. Rank 0 only; `runtime.profile.enabled=false` skips it; a failure to measure is
logged and never fails the run."""

from __future__ import annotations

import logging

from detect.engine.hooks.base import Hook
from detect.run import SummaryFile

log = logging.getLogger("detect")


class CostHook(Hook):
    def __init__(self, summary: SummaryFile, profile: dict, enabled: bool = True):
        self.summary = summary
        self.profile = profile or {}
        self.enabled = enabled and bool(self.profile.get("enabled", True))

    def after_train(self, trainer) -> None:
        if not self.enabled:
            return
        from detect.engine.cost import input_size, measure_cost

        height, width = input_size(trainer.cfg.model)
        try:
            cost = measure_cost(trainer.eval_model, height, width, trainer.parts.device,
                                int(self.profile.get("warmup", 2)), int(self.profile.get("repeats", 10)))
        except Exception as err:  # a measurement is a bonus: the trained run stays finished
            log.warning("Cost measurement skipped (runtime.profile): %s: %s", type(err).__name__, err)
            return
        self.summary.update(cost=cost)
        flops = "FLOPs not counted" if cost["gflops"] is None else f"{cost['gflops']:.1f} GFLOPs per image"
        log.info("Cost at %dx%d px (%s weights): %.1fM parameters, %s, %.1f ms per image (batch 1, %s, %d threads; "
                 "runtime.profile.enabled=false skips this)", height, width, trainer.weights_name, cost["params_m"],
                 flops, cost["latency_ms"], cost["device"], cost["threads"])
