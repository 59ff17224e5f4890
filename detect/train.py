"""Train a detector: `python -m detect.train [model=...] [data=...] [key=value ...]`.

With no arguments it trains the small demo model on the embedded demo data (generated on first
use). `python -m detect.train model=faster_rcnn data=trash` trains on the competition layout.
Run directory: outputs/<member>/<run_name>/<timestamp>/ (see README "Run directory").
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from detect.config import register_resolvers

log = logging.getLogger("detect")
register_resolvers()


def train(cfg: DictConfig) -> float | None:
    """Train with the composed config; returns the best monitored score (for sweepers)."""
    # torch is imported here, not at module level, so `--help` and `--cfg job` stay instant.
    from hydra.core.hydra_config import HydraConfig

    from detect.data.coco import DataConfigError
    from detect.engine.checkpoint import CheckpointError
    from detect.engine.loop import NonFiniteLossError
    from detect.engine.trainer import Trainer
    from detect.models.backbones import WeightsUnavailableError

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        return Trainer(cfg, run_dir).fit()
    except (DataConfigError, WeightsUnavailableError, CheckpointError, NonFiniteLossError, ValueError) as err:
        # A user-facing problem: one clear message, no traceback. The run dir records it as failed.
        log.error("%s", err)
        sys.exit(1)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
