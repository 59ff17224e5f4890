"""Evaluate or predict with a trained detector.

    python -m detect.test run=outputs/me/cascade_rcnn_trash/2026-11-27_10-00-00              # eval, best
    python -m detect.test run=<run dir> checkpoint=last mode=predict                           # submission
    python -m detect.test checkpoint=path/to/model.pth mode=predict data.root=/path/to/trash

The checkpoint carries the composed config of its run and the class list, so the model, the data
and the label order come from it; conf/test.yaml's keys change only how the test runs.
- mode=eval: COCO metrics on the val split (the run's val file, or val{k}.json of its fold), the
  classwise table in test.log and `metrics.json`: the numbers the trainer logged for that epoch;
  the detections in `predictions.bbox.json` (for python -m detect.error_analysis).
- mode=predict: every image of test.json -> `predictions.bbox.json` (COCO results, xywh pixels) and
  `submission.csv` (the competition format, see detect/evaluation/submission.py).
Results go to `<run dir>/test/<mode>_<time>/`. The work is detect/engine/testing.py; this module
parses (Hydra), calls and reports.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from detect.config import register_resolvers

register_resolvers()


@hydra.main(config_path="../conf", config_name="test", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from detect.cli import run_hydra_job
    from detect.engine.testing import run_test
    from detect.run import TestDir

    out_dir = TestDir(Path(HydraConfig.get().runtime.output_dir))

    def remove_empty_folder() -> None:  # a failed test leaves no folder of its own (the message is on the terminal)
        if not out_dir.holds_results():
            shutil.rmtree(out_dir.root, ignore_errors=True)

    run_hydra_job(lambda: run_test(cfg, out_dir.root), on_failure=remove_empty_folder)


def start(argv: list[str]) -> None:
    from detect.cli import check_hydra_command_line

    check_hydra_command_line(argv, config_name="test")  # --help, and config errors: exit 2 before any folder
    main()


if __name__ == "__main__":
    from detect.cli import or_exit

    or_exit(lambda: start(sys.argv[1:]))  # Ctrl-C while starting up: one line, exit 130
