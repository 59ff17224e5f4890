"""Train a detector: `python -m detect.train [model=...] [data=...] [key=value ...]`.

With no arguments it trains the small demo model on the embedded demo data (generated at start-up
when missing). `python -m detect.train model=faster_rcnn data=trash` trains on the competition
layout. Run directory: outputs/<member>/<run_name>/<timestamp>/ (see README "Run directory").
The work is detect.engine.fit.fit; this module parses, calls and reports.
"""

from __future__ import annotations

import logging
import os
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
    from hydra.types import RunMode

    from detect.cli import report
    from detect.data.demo import prepare_demo_data
    from detect.engine import distributed
    from detect.engine.fit import fit
    from detect.engine.provenance import provenance
    from detect.errors import DetectError, RunInterrupted

    hydra_cfg = HydraConfig.get()
    place = distributed.current()
    if not place.is_main:  # under torchrun rank 0 speaks for all: the others say only warnings and errors
        logging.getLogger("detect").setLevel(logging.WARNING)
    try:
        prepare_demo_data(cfg.data, place)  # data=demo: generated here when missing (never while building)
        return fit(cfg, hydra_cfg.runtime.output_dir, provenance(hydra_cfg.overrides.task))
    except RunInterrupted as err:  # Ctrl-C / SIGTERM: a sweep stops too
        sys.exit(report(err))
    except DetectError as err:
        # A user-facing problem: one clear message, no traceback. The run dir records it as failed.
        code = report(err)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return None  # this job is marked failed in its summary.json; the sweep goes on
        sys.exit(code)
    finally:
        distributed.shutdown(place)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    from detect.cli_help import print_help_and_exit
    from detect.config_check import check_cli

    print_help_and_exit(sys.argv[1:], config_name="train")  # --help: our listing, 3x faster than Hydra's
    check_cli(sys.argv[1:], config_name="train")  # unknown keys, wrong types, missing values: exit 2 before any run dir
    if os.environ.get("WORLD_SIZE", "1") != "1":  # started by torchrun: join the other processes first
        from detect.engine.distributed import init_from_env

        sys.argv += init_from_env(sys.argv[1:])
    main()
