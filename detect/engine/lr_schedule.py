"""The learning-rate schedule: torch's lr schedulers named by the config, stepped once per iteration.

`schedule.lr_scheduler` (conf/schedule/*.yaml) holds one `_target_` node per scheduler, e.g.
MMDetection's 1x schedule as `warmup` (LinearLR) and `main` (MultiStepLR). They are built in the
order of the config and combined with torch's ChainedScheduler: each one multiplies the lr the
others left, so the warmup ramp multiplies the stepped lr. Two conventions of this module, written
into the yaml where they apply:
- `_epoch_keys_: [milestones]` names a node's arguments that count epochs; they are multiplied by
  the iterations per epoch before the scheduler is built (the schedulers step per iteration);
- a node with `total_iters: 0` (a warmup of no iterations) is left out.

The main decay is its own sub-group, `schedule/lr_decay=step|cosine|flat_cosine|poly`, so any
schedule takes any decay. torch's CosineAnnealingLR rises again after T_max and has no flat start,
and its recursive form does not chain exactly with a warmup when eta_min > 0; `CosineLR` and `PolyLR`
below are chainable in torch's sense (each step multiplies the lr by factor(t) / factor(t - 1)), so
the lr at iteration t is exactly lr x warmup(t) x factor(t), and they hold their last value past the end.

`load_lr_scheduler_state` also reads the scheduler state of checkpoints written before this module
built torch's schedulers (a LambdaLR over `lr_factor`), so those runs resume with the same lr.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from detect.engine.build import instantiate
from detect.errors import CheckpointError, ConfigError

EPOCH_KEYS = "_epoch_keys_"  # the builder's own key in a scheduler node; not passed to the scheduler


class FactorLR(torch.optim.lr_scheduler.LRScheduler):
    """A chainable scheduler from a closed-form factor: lr(t) = base_lr x factor(t) on its own, and
    x factor(t) / factor(t - 1) of whatever lr the other chained schedulers left."""

    def factor(self, t: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        if t == 0:
            return [group["lr"] * self.factor(0) for group in self.optimizer.param_groups]
        before, now = self.factor(t - 1), self.factor(t)
        return [group["lr"] * now / before if before > 0 else 0.0 for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


def _check_decay(name: str, total_iters: int, min_ratio: float) -> None:
    if int(total_iters) < 1:
        raise ConfigError(f"schedule.lr_scheduler.main ({name}): total_iters={total_iters} must be >= 1 iteration.")
    if not 0 <= float(min_ratio) <= 1:
        raise ConfigError(f"schedule.lr_scheduler.main.min_ratio={min_ratio} must be between 0 and 1.")


class CosineLR(FactorLR):
    """factor(t) = 1 for t <= flat = flat_ratio x total_iters, then
    min_ratio + (1 - min_ratio) x (1 + cos(pi x (t - flat) / (total_iters - flat))) / 2, and min_ratio
    from total_iters on."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, min_ratio: float = 0.0,
                 flat_ratio: float = 0.0, last_epoch: int = -1):
        _check_decay("CosineLR", total_iters, min_ratio)
        if not 0 <= float(flat_ratio) < 1:
            raise ConfigError(f"schedule.lr_scheduler.main.flat_ratio={flat_ratio} must be >= 0 and < 1.")
        self.total_iters, self.min_ratio = int(total_iters), float(min_ratio)
        self.flat_iters = round(float(flat_ratio) * self.total_iters)
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        if t <= self.flat_iters:
            return 1.0
        progress = min(1.0, (t - self.flat_iters) / (self.total_iters - self.flat_iters))
        return self.min_ratio + (1 - self.min_ratio) * (1 + math.cos(math.pi * progress)) / 2


class PolyLR(FactorLR):
    """factor(t) = max(min_ratio, (1 - min(t, total_iters) / total_iters) ** power)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, power: float = 1.0,
                 min_ratio: float = 0.0, last_epoch: int = -1):
        _check_decay("PolyLR", total_iters, min_ratio)
        self.total_iters, self.power, self.min_ratio = int(total_iters), float(power), float(min_ratio)
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        return max(self.min_ratio, (1 - min(t, self.total_iters) / self.total_iters) ** self.power)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, schedule_cfg: DictConfig,
                       iters_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedulers of `schedule_cfg.lr_scheduler`, chained, to be stepped once per iteration.

    Build it after the optimizer's lr is final (auto_scale_lr): the schedulers take it as base lr.
    Raises ConfigError naming the key for a node that cannot be built.
    """
    section = schedule_cfg.get("lr_scheduler")
    if not isinstance(section, DictConfig) or not section:
        raise ConfigError("schedule.lr_scheduler is missing or empty: it names the lr schedulers, e.g. "
                          "{warmup: {_target_: torch.optim.lr_scheduler.LinearLR, ...}, main: {...}} "
                          "(see conf/schedule/1x.yaml).")
    schedulers = []
    for name in section:
        key = f"schedule.lr_scheduler.{name}"
        node = scheduler_node(key, section, name, iters_per_epoch)
        if node is None or node.get("total_iters") == 0:  # switched off, or a warmup of no iterations
            continue
        schedulers.append(instantiate(key, node, optimizer=optimizer))
    if not schedulers:  # every node left out: a constant lr (a factor of 1 from the start)
        schedulers.append(torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0))
    return torch.optim.lr_scheduler.ChainedScheduler(schedulers, optimizer=optimizer)


def scheduler_node(key: str, section: DictConfig, name: str, iters_per_epoch: int) -> DictConfig | None:
    """The node `section[name]` of one scheduler, resolved, with its `_epoch_keys_` converted to
    iterations and dropped; None for a node set to null."""
    try:
        value = section[name]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key} cannot be read: {err}".rstrip(".") + ".") from None
    if value is None:
        return None
    if not isinstance(value, dict) or "_target_" not in value:
        raise ConfigError(f"{key} must be a scheduler node with a _target_ (e.g. "
                          f"{key}._target_=torch.optim.lr_scheduler.MultiStepLR), not {value!r}.")
    epoch_keys = value.pop(EPOCH_KEYS, None) or []
    if isinstance(epoch_keys, str):
        epoch_keys = [epoch_keys]
    for name in epoch_keys:
        if name not in value:
            raise ConfigError(f"{key}.{EPOCH_KEYS} names '{name}', which {key} does not have "
                              f"(its keys: {', '.join(k for k in value if k != '_target_')}).")
        value[name] = _epochs_to_iterations(f"{key}.{name}", value[name], iters_per_epoch)
    return OmegaConf.create(value)


def _epochs_to_iterations(key: str, value: Any, iters_per_epoch: int) -> Any:
    if isinstance(value, list):
        return [_epochs_to_iterations(f"{key}[{i}]", v, iters_per_epoch) for i, v in enumerate(value)]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} counts epochs, so it must be a number (or a list of numbers).")
    return round(value * iters_per_epoch)


def load_lr_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict) -> None:
    """Restore `scheduler` (from build_lr_scheduler) from a checkpoint's scheduler state.

    Call it after the optimizer's state is loaded: the optimizer then holds the current lr. A state
    written by build_lr_scheduler is loaded as it is (the schedule must have the same schedulers);
    a LambdaLR state of a checkpoint written before (keys 'lr_lambdas', 'last_epoch', 'base_lrs')
    is converted: every scheduler continues from the same iteration and lr, as the old one would.
    """
    if "lr_lambdas" in state:
        _load_lambda_lr_state(scheduler, state)
        return
    saved = state.get("_schedulers")
    ours = getattr(scheduler, "_schedulers", None)
    if (saved is None) != (ours is None) or (ours is not None and len(saved) != len(ours)):
        raise CheckpointError(
            f"The checkpoint's lr schedule has {len(saved) if saved is not None else 1} scheduler(s), this run's "
            f"schedule.lr_scheduler {len(ours) if ours is not None else 1}: resume with the schedule the run was "
            "started with (schedule=..., schedule.warmup_iters).")
    scheduler.load_state_dict(state)


def _load_lambda_lr_state(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict) -> None:
    """Continue a LambdaLR(lr_factor) run: `last_epoch` steps were taken and the optimizer holds the
    lr of the next iteration. The chained schedulers compute each step's lr from the current one
    (MultiStepLR x gamma at a milestone, LinearLR x the ratio of two warmup factors), so setting
    their step count is enough for them to go on exactly as lr_factor would."""
    steps = int(state["last_epoch"])
    lrs = [group["lr"] for group in scheduler.optimizer.param_groups]
    base_lrs = list(state.get("base_lrs") or [group.get("initial_lr", group["lr"])
                                               for group in scheduler.optimizer.param_groups])
    for sub in getattr(scheduler, "_schedulers", [scheduler]):
        sub.last_epoch = steps
        sub._step_count = steps + 1  # as after `steps` calls of step() (1 for the one in __init__)
        sub.base_lrs = list(base_lrs)
        sub._last_lr = list(lrs)
    scheduler._last_lr = list(lrs)


def replan_lr_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict) -> tuple[list[float], list[float]]:
    """A resumed run whose schedule.epochs changed: take only the position (steps taken) from the
    checkpoint's scheduler state and keep this run's plan (milestones, cosine length built from the
    new epochs), then set the lr to what the new plan gives at that position. Returns (lr before,
    lr after) per parameter group.

    So a finished 12-epoch cosine run extended to 24 epochs continues on the 24-epoch curve (its lr
    goes back up to where that curve is at iteration 12 x iters); a step schedule keeps its milestones
    and, past the last one, goes on at the last lr (add milestones to decay again)."""
    if "lr_lambdas" in state or "_schedulers" not in state:
        raise CheckpointError("This checkpoint's lr schedule predates re-planning (a LambdaLR): resume it with its "
                              "own schedule.epochs, or start a new run from its weights with runtime.load_from.")
    subs = getattr(scheduler, "_schedulers", None)
    if subs is None or len(subs) != len(state["_schedulers"]):
        raise CheckpointError("The checkpoint's lr schedule has other schedulers than this run's: resume with the "
                              "schedule the run was started with (only schedule.epochs may change).")
    optimizer = scheduler.optimizer
    before = [group["lr"] for group in optimizer.param_groups]
    factors = [1.0] * len(optimizer.param_groups)
    for sub, saved in zip(subs, state["_schedulers"]):
        sub.last_epoch, sub._step_count = int(saved["last_epoch"]), int(saved["_step_count"])
        if not hasattr(sub, "_get_closed_form_lr"):
            raise CheckpointError(f"{type(sub).__name__} has no closed form, so its lr cannot be re-planned for a "
                                  "new schedule.epochs: resume with the old value.")
        closed = sub._get_closed_form_lr()
        factors = [f * lr / base for f, lr, base in zip(factors, closed, sub.base_lrs)]
    planned = [group["initial_lr"] * f for group, f in zip(optimizer.param_groups, factors)]
    # Where the new plan agrees with the lr the run had, the run's own value stays (bit for bit as if
    # it had never stopped); the closed form differs from the stepped value in the last digits.
    after = [lr if math.isclose(lr, new, rel_tol=1e-9) else new for lr, new in zip(before, planned)]
    for group, lr in zip(optimizer.param_groups, after):
        group["lr"] = lr
    for sub in subs:
        sub._last_lr = list(after)
    scheduler._last_lr = list(after)
    return before, after
