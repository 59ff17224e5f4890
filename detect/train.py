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
        return fit(cfg, hydra_cfg.runtime.output_dir, provenance(hydra_cfg.overrides.task))

    def tidy_up() -> None:
        """A run stopped before the trainer wrote anything (Ctrl-C while starting up) leaves no folder."""
        from detect.run.launch import release_start_lock, remove_unused_folder

        release_start_lock()
        remove_unused_folder(hydra_cfg.runtime.output_dir)

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


def multirun_failures() -> None:
    """After a sweep (-m) whose jobs did not all finish: say which, and exit 1 (the summary is written)."""
    from detect.run.sweep_summary import unfinished_jobs

    if unfinished_jobs:
        print(f"{len(unfinished_jobs)} job(s) of the sweep did not finish: " + "; ".join(unfinished_jobs[:5])
              + (" ..." if len(unfinished_jobs) > 5 else "") + ". See sweep_summary.md in the sweep folder.",
              file=sys.stderr)
        sys.exit(1)


def start(argv: list[str]) -> None:
    """Check the command line, settle the run's folder, then let Hydra run `main`."""
    from detect.cli import check_hydra_command_line, or_exit
    from detect.run import launch

    check_hydra_command_line(argv, config_name="train", check_output=False)  # --help; config errors: exit 2
    torchrun = os.environ.get("WORLD_SIZE", "1") != "1"
    if torchrun:  # join the other processes first
        from detect.engine.distributed import init_from_env

        sys.argv += init_from_env(argv)
    # A folder of this run's own, settled by rank 0: claimed for a new run; for a resume, free and of
    # the same config. Under torchrun every process then names the folder rank 0 claimed.
    extra = or_exit(lambda: launch.prepare_single_run(argv)) if os.environ.get("RANK", "0") == "0" else None
    if torchrun:
        from detect.engine import distributed

        extra = distributed.from_main(extra, distributed.current())
        if os.environ.get("RANK", "0") != "0":
            extra = [o for o in extra if o.startswith(launch.RUN_DIR_OVERRIDE)]
    sys.argv += extra
    try:
        main()
        multirun_failures()
    except KeyboardInterrupt:  # before the job started (or between Hydra's steps): no empty folder left
        launch.release_start_lock()
        launch.remove_unused_folder(launch.created_folder() or "")
        raise


if __name__ == "__main__":
    from detect.cli import or_exit

    or_exit(lambda: start(sys.argv[1:]))  # Ctrl-C while starting up: one line, exit 130
