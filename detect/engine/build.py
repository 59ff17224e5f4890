"""Objects named by the config: the device, and Hydra's instantiate with errors that name the key."""

from __future__ import annotations

import hydra
import hydra.errors
import torch
from omegaconf import DictConfig

from detect.errors import ConfigError, DetectError


def select_device(name: str, key: str = "runtime.device") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"{key}={name} is not a device: use auto, cpu, cuda or cuda:N ({err}).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but CUDA is not available here; use {key}=cpu or auto.")
    return device


def instantiate(key: str, node: DictConfig, **kwargs):
    """hydra.utils.instantiate, with a builder's wrong or missing arguments reported as a config
    problem that names the config key (errors of our own pass through unchanged)."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except hydra.errors.InstantiationException as err:
        cause = err.__cause__  # nested parts (model.backbone inside model) wrap one error per level
        while isinstance(cause, hydra.errors.InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, DetectError):
            raise cause from None
        raise ConfigError(
            f"{key} could not be built from _target_={node.get('_target_')}: {err}. A key the target does not "
            f"take can be removed on the command line with '~{key}.<key>'."
        ) from err
