"""Look at the training data before a long run: `python -m detect.browse [data=...] [key=value ...]`.

Writes `num_images` images of a split with their boxes drawn as the detector receives them: after
the data set's transforms (split=train: the training pipeline of data.aug as the first epoch draws it,
flip, mosaic and the rest included; split=val: the evaluation ones) and after the model's resize
(torchvision's GeneralizedRCNNTransform: the shorter side to min_size unless the longer would pass
max_size; skipped for a pipeline that sizes training images itself, data.aug.resizes). The config is the training config
(conf/browse.yaml starts from conf/train.yaml), so `data=trash data.root=/x`, `experiment=...` and
`model=...` mean what they mean to `detect.train`. With no arguments it shows the demo data
(generated on first use).

Written to outputs/<member>/browse/<data.name>_<time>/ (or `out=DIR`):
- `NN_<image file stem>.png`: one per image, NN its place in the grid; boxes in one colour per class,
  labelled with the class name;
- `grid.png`: all of them, `grid_columns` per row, each padded to the largest;
- `browse.log`: one line per image (file, size shown, boxes per class, flipped or not for data/aug=flip).

The work is detect/plots/browse.py; this module parses (Hydra), calls and reports.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from detect.config import register_resolvers

register_resolvers()


def browse_dir(out: str | None, default: str) -> str:
    """hydra.run.dir of detect.browse: `out` when set, else the default folder."""
    return default if out in (None, "", "None", "null") else str(out)


# Registered here, not in detect.config: only conf/browse.yaml uses it, and it must exist before
# Hydra resolves hydra.run.dir, which happens after this module is imported.
if not OmegaConf.has_resolver("detect.browse_dir"):
    OmegaConf.register_new_resolver("detect.browse_dir", browse_dir)


@hydra.main(config_path="../conf", config_name="browse", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from detect.cli import run_hydra_job
    from detect.plots.browse import browse

    run_hydra_job(lambda: browse(cfg))


def start(argv: list[str]) -> None:
    from detect.cli import check_hydra_command_line

    check_hydra_command_line(argv, config_name="browse")  # --help, and config errors: exit 2 before any folder
    main()


if __name__ == "__main__":
    from detect.cli import or_exit

    or_exit(lambda: start(sys.argv[1:]))  # Ctrl-C while starting up: one line, exit 130
