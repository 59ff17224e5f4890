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

    try:
        # A failed run is marked failed in its summary.json; in a sweep the other jobs go on.
        # start() removes a new folder the run never wrote into and releases the start-up lock.
        return run_hydra_job(work)
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
    from detect.cli import check_hydra_command_line, exit_code_of, or_exit, user_message
    from detect.errors import DetectError
    from detect.run import launch

    check_hydra_command_line(argv, config_name="train", check_output=False)  # --help; config errors: exit 2
    torchrun = os.environ.get("WORLD_SIZE", "1") != "1"
    is_main = os.environ.get("RANK", "0") == "0"
    if torchrun:  # join the other processes first
        from detect.engine.distributed import init_from_env

        sys.argv += init_from_env(argv)
    if not torchrun:
        extra = or_exit(lambda: launch.prepare_single_run(argv)) if is_main else []
    else:
        # Rank 0 settles the folder; every process gets its answer, or its error and exit code, so
        # that no rank waits for a rank 0 that has given up.
        from detect.engine import distributed

        outcome = None
        if is_main:
            try:
                outcome = ("ok", launch.prepare_single_run(argv))
            except DetectError as err:
                outcome = ("error", user_message(err), exit_code_of(err))
        outcome = distributed.from_main(outcome, distributed.current())
        if outcome[0] == "error":
            if is_main:
                print(outcome[1], file=sys.stderr)
            # Leave the process group before exiting: torch's gloo threads left running at interpreter
            # exit abort the process (SIGABRT) instead of ending it with the usage error's code.
            distributed.shutdown(distributed.current())
            sys.exit(outcome[2])
        extra = outcome[1] if is_main else [o for o in outcome[1] if o.startswith(launch.RUN_DIR_OVERRIDE)]
    sys.argv += extra
    try:
        main()
        multirun_failures()
    finally:  # any way out (a Hydra error, Ctrl-C, success): the start-up lock goes, an unused new folder too
        launch.release_start_lock()
        launch.remove_unused_folder(launch.created_folder() or "")


if __name__ == "__main__":
    from detect.cli import or_exit

    or_exit(lambda: start(sys.argv[1:]))  # Ctrl-C while starting up: one line, exit 130
