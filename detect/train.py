"""Train a detector: `python -m detect.train [model=...] [data=...] [key=value ...]`.

With no arguments it trains the small demo model on the embedded demo data (generated at start-up
when missing). `python -m detect.train model=faster_rcnn data=trash` trains on the competition
layout. Run directory: outputs/<member>/<run_name>/<timestamp>/ (see README "Run directory").
The work is detect.engine.fit.fit; this module parses, calls and reports.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

import hydra
from omegaconf import DictConfig

from detect.config import register_resolvers

log = logging.getLogger("detect")
register_resolvers()


def train(cfg: DictConfig) -> float | None:
    """Train with the composed config; returns the best monitored score (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig

    from detect.cli import run_hydra_job

    hydra_cfg = HydraConfig.get()
    place = None

    def work() -> float | None:
        nonlocal place
        # torch is imported here, not at module level, so `--help` and `--cfg job` stay instant (and a
        # Ctrl-C during these imports is handled like any other).
        from detect.data.demo import prepare_demo_data
        from detect.engine import distributed
        from detect.engine.fit import fit
        from detect.engine.provenance import provenance

        place = distributed.current()
        if not place.is_main:  # under torchrun rank 0 speaks for all: the others say only warnings and errors
            logging.getLogger("detect").setLevel(logging.WARNING)
        prepare_demo_data(cfg.data, place)  # data=demo: generated here when missing (never while building)
        run_dir = distributed.from_main(hydra_cfg.runtime.output_dir, place)  # the folder rank 0 claimed
        return fit(cfg, run_dir, provenance(hydra_cfg.overrides.task))

    def tidy_up() -> None:
        """A run stopped before the trainer wrote anything (Ctrl-C while starting up) leaves no folder."""
        from detect.run import RunDir
        from detect.run.launch import release_start_lock

        release_start_lock()
        run = RunDir(hydra_cfg.runtime.output_dir)
        is_main = os.environ.get("RANK", "0") == "0"
        if is_main and not run.summary_file.exists() and not run.has_checkpoints():
            shutil.rmtree(run.root, ignore_errors=True)

    try:
        # A failed run is marked failed in its summary.json; in a sweep the other jobs go on.
        return run_hydra_job(work, on_failure=tidy_up)
    finally:
        if place is not None:
            from detect.engine import distributed

            distributed.shutdown(place)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


def start(argv: list[str]) -> None:
    """Check the command line, settle the run's folder, then let Hydra run `main`."""
    from detect.cli import check_hydra_command_line, or_exit

    check_hydra_command_line(argv, config_name="train", check_output=False)  # --help; config errors: exit 2
    if os.environ.get("WORLD_SIZE", "1") != "1":  # started by torchrun: join the other processes first
        from detect.engine.distributed import init_from_env

        sys.argv += init_from_env(argv)
    if os.environ.get("RANK", "0") == "0":  # rank 0 decides the folder; train() tells the others
        from detect.run.launch import prepare_single_run

        # A folder of this run's own: claimed for a new run; for a resume, free and of the same config.
        sys.argv += or_exit(lambda: prepare_single_run(argv))
    main()


if __name__ == "__main__":
    from detect.cli import or_exit

    or_exit(lambda: start(sys.argv[1:]))  # Ctrl-C while starting up: one line, exit 130
