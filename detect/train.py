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

    from detect.cli import run_hydra_job
    from detect.data.demo import prepare_demo_data
    from detect.engine import distributed
    from detect.engine.fit import fit
    from detect.engine.provenance import provenance

    hydra_cfg = HydraConfig.get()
    place = distributed.current()
    if not place.is_main:  # under torchrun rank 0 speaks for all: the others say only warnings and errors
        logging.getLogger("detect").setLevel(logging.WARNING)

    def work() -> float | None:
        prepare_demo_data(cfg.data, place)  # data=demo: generated here when missing (never while building)
        run_dir = distributed.from_main(hydra_cfg.runtime.output_dir, place)  # the folder rank 0 claimed
        return fit(cfg, run_dir, provenance(hydra_cfg.overrides.task))

    try:
        # A failed run is marked failed in its summary.json; in a sweep the other jobs go on.
        return run_hydra_job(work)
    finally:
        distributed.shutdown(place)

@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    from detect.cli import check_hydra_command_line, or_exit

    check_hydra_command_line(sys.argv[1:], config_name="train")  # --help, and config errors: exit 2 before any run dir
    if os.environ.get("WORLD_SIZE", "1") != "1":  # started by torchrun: join the other processes first
        from detect.engine.distributed import init_from_env

        sys.argv += init_from_env(sys.argv[1:])
    if os.environ.get("RANK", "0") == "0":  # rank 0 decides the folder; train() tells the others
        from detect.run.launch import prepare_single_run

        # A folder of this run's own: claimed for a new run; for a resume, free and of the same config.
        sys.argv += or_exit(lambda: prepare_single_run(sys.argv[1:]))
    main()
