"""The learning-rate schedule: torch's lr schedulers named by the config, stepped once per iteration.

`schedule.lr_scheduler` (conf/schedule/*.yaml) holds one `_target_` node per scheduler, e.g.
MMDetection's 1x schedule as `warmup` (LinearLR) and `main` (MultiStepLR). They are built in the
order of the config and combined with torch's ChainedScheduler: each one multiplies the lr the
others left, so the warmup ramp multiplies the stepped lr. Two conventions of this module, written
into the yaml where they apply:
- `_epoch_keys_: [milestones]` names a node's arguments that count epochs; they are multiplied by
  the iterations per epoch before the scheduler is built (the schedulers step per iteration);
- a node with `total_iters: 0` (a warmup of no iterations) is left out.

`load_lr_scheduler_state` also reads the scheduler state of checkpoints written before this module
built torch's schedulers (a LambdaLR over `lr_factor`), so those runs resume with the same lr.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from detect.engine.build import instantiate
from detect.errors import CheckpointError, ConfigError

EPOCH_KEYS = "_epoch_keys_"  # the builder's own key in a scheduler node; not passed to the scheduler


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
