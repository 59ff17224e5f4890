"""Every path of the run-directory contract, in one place (see the project guide, "Contracts").

    <run dir>/
      .hydra/config.yaml, .hydra/overrides.yaml   the composed config and the command line (Hydra's own)
      train.log                                   the human log (Hydra's log file, named after the job)
      metrics.jsonl                               one JSON object per log interval and per evaluation
      summary.json                                the typed run summary (detect.run.summary)
      checkpoints/best_<monitor>_epoch_N.pth      the best checkpoint (exactly one)
      checkpoints/epoch_N.pth                     at most runtime.max_keep_ckpts of them
      checkpoints/last.pth                        the resume point
      val_predictions.bbox.json                   the best epoch's detections on the val split
      plots/, report.md                           pictures and the one-page report
      test/<mode>_<time>/                         what detect.test writes for this run
      .lock                                       held while a process writes the run (detect.run.lock)
      .hydra/resumed_<time>/                      the config and command line of each in-place resume

    <sweep dir>/  (a multirun: outputs/<member>/<run_name>/multirun_<time>/)
      <job>/                                      one run dir per job (0, 1, ...)
      sweep_summary.md, sweep_summary.json        every job's overrides, status and best score
      cv_report.md, cv_report.json                folds' mean and std when jobs differ in data.fold only

No other module names these files: they ask a `RunDir` (or a `TestDir`) for them. Imports nothing
heavy (no torch): `detect.runs`, `detect.report` and the config resolvers use it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HYDRA_DIR = ".hydra"
CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
TRAIN_LOG = "train.log"
BROWSE_LOG = "browse.log"  # detect.browse's folders hold it: a training config, but not a run
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pth"
PREDICTIONS_FILE = "val_predictions.bbox.json"
PLOTS_DIR = "plots"
REPORT_FILE = "report.md"
TEST_DIR = "test"
CHECKPOINT_SUFFIX = ".pth"
SWEEP_SUMMARY = "sweep_summary"  # .md and .json
CV_REPORT = "cv_report"  # .md and .json
LOCK_FILE = ".lock"
RESUMED_PREFIX = "resumed_"  # .hydra/resumed_<time>/: Hydra's files of an in-place resume (the originals stay)
TEMP_SUFFIX = ".tmp"  # files are written to <name>.tmp and renamed into place

_EPOCH_CHECKPOINT = re.compile(r"^epoch_(\d+)\.pth$")
_BEST_CHECKPOINT = re.compile(r"^best_(.+)_epoch_(\d+)\.pth$")


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch}{CHECKPOINT_SUFFIX}"


def best_checkpoint_name(monitor: str, epoch: int) -> str:
    return f"best_{monitor}_epoch_{epoch}{CHECKPOINT_SUFFIX}"


def epoch_of_checkpoint(path: Path) -> int | None:
    """N of `epoch_N.pth`; None for any other name."""
    match = _EPOCH_CHECKPOINT.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_best_checkpoint(path: Path) -> bool:
    return _BEST_CHECKPOINT.match(Path(path).name) is not None


def is_checkpoint_name(name: str) -> bool:
    """`best`, `last` or `epoch_N`: the names detect.test accepts for a run's checkpoints."""
    return name in ("best", "last") or re.fullmatch(r"epoch_\d+", name) is not None


@dataclass(frozen=True)
class RunDir:
    """One training run's folder (or one job's folder of a multirun)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    # --- files Hydra writes
    @property
    def hydra_dir(self) -> Path:
        return self.root / HYDRA_DIR

    @property
    def config_file(self) -> Path:
        return self.hydra_dir / CONFIG_FILE

    @property
    def overrides_file(self) -> Path:
        return self.hydra_dir / OVERRIDES_FILE

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG

    def resumed_hydra_subdir(self, stamp: str) -> str:
        """hydra.output_subdir of an in-place resume: its config and command line beside the originals."""
        return f"{HYDRA_DIR}/{RESUMED_PREFIX}{stamp}"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    def holds_a_run(self) -> bool:
        """Whether a training ever started here (Hydra's config or the trainer's summary is there)."""
        return self.config_file.is_file() or self.summary_file.is_file()

    # --- files the trainer writes
    @property
    def metrics_file(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def summary_file(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / epoch_checkpoint_name(epoch)

    def best_checkpoint(self, monitor: str, epoch: int) -> Path:
        return self.checkpoints / best_checkpoint_name(monitor, epoch)

    def best_checkpoints(self) -> list[Path]:
        """Every best_*.pth (exactly one in a healthy run that evaluated)."""
        return sorted(p for p in self.checkpoints.glob(f"best_*{CHECKPOINT_SUFFIX}") if is_best_checkpoint(p))

    def epoch_checkpoints(self) -> list[tuple[int, Path]]:
        """(N, epoch_N.pth) sorted by N."""
        found = [(epoch_of_checkpoint(p), p) for p in self.checkpoints.glob(f"epoch_*{CHECKPOINT_SUFFIX}")]
        return sorted((n, p) for n, p in found if n is not None)

    def all_checkpoints(self) -> list[Path]:
        return sorted(self.checkpoints.glob(f"*{CHECKPOINT_SUFFIX}"))

    @property
    def predictions_file(self) -> Path:
        return self.root / PREDICTIONS_FILE

    @property
    def plots(self) -> Path:
        return self.root / PLOTS_DIR

    @property
    def report_file(self) -> Path:
        return self.root / REPORT_FILE

    @property
    def test_root(self) -> Path:
        return self.root / TEST_DIR

    # --- what kind of folder this is
    def has_checkpoints(self) -> bool:
        return self.checkpoints.is_dir()

    def files_written_while_running(self) -> list[Path]:
        """The files the trainer keeps current: their age tells a live run from a dead one."""
        return [self.train_log, self.metrics_file, self.summary_file]

    def __str__(self) -> str:
        return str(self.root)


def run_dir_of_checkpoint(path: Path) -> RunDir | None:
    """The run a checkpoint file (or a checkpoints/ folder) belongs to; None for a loose file."""
    path = Path(path).expanduser()
    if path.name == CHECKPOINTS_DIR and path.is_dir():
        return RunDir(path.parent)
    if path.suffix == CHECKPOINT_SUFFIX and path.parent.name == CHECKPOINTS_DIR:
        return RunDir(path.parent.parent)
    return None


def is_last_checkpoint(path: Path) -> bool:
    path = Path(path)
    return path.name == LAST_CHECKPOINT and path.parent.name == CHECKPOINTS_DIR


@dataclass(frozen=True)
class TestDir:
    """What one `python -m detect.test` writes."""

    root: Path

    @property
    def log_file(self) -> Path:
        return self.root / "test.log"

    @property
    def predictions_file(self) -> Path:
        return self.root / "predictions.bbox.json"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.json"

    @property
    def submission_file(self) -> Path:
        return self.root / "submission.csv"

    def holds_results(self) -> bool:
        """Anything besides Hydra's own files and the log: a failed test leaves no folder behind otherwise."""
        return any(p.name not in (HYDRA_DIR, self.log_file.name) for p in self.root.iterdir())


@dataclass(frozen=True)
class SweepDir:
    """A multirun's folder: one run dir per job, and the summaries detect.run.sweep_summary writes."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    def job_dirs(self) -> list[Path]:
        """The jobs' run dirs (those Hydra wrote a config into), in job order: 0, 1, ..., 10."""
        jobs = [d for d in self.root.iterdir() if d.is_dir() and RunDir(d).hydra_dir.is_dir()]
        return sorted(jobs, key=lambda d: (len(d.name), d.name))

    def summary_file(self, suffix: str) -> Path:
        return self.root / f"{SWEEP_SUMMARY}.{suffix}"

    def cv_report_file(self, suffix: str) -> Path:
        return self.root / f"{CV_REPORT}.{suffix}"


def temporary_path(path: Path) -> Path:
    """Where an atomic write of `path` writes first."""
    return path.with_name(path.name + TEMP_SUFFIX)
