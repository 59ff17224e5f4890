"""Checkpoint files of a run: atomic writes, safe loads, the best-by-metric rule and pruning.

A checkpoint is a plain dict that describes itself (model, optimizer, scheduler, epoch, iteration,
best score, RNG states, classes and the composed config), so detect.test needs nothing else.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import torch

from detect.errors import CheckpointError, ConfigError
from detect.run.paths import (
    CHECKPOINT_SUFFIX,
    RunDir,
    epoch_of_checkpoint,
    is_checkpoint_name,
    temporary_path,
)

log = logging.getLogger("detect")
SPACE_MARGIN = 1.2  # ask for 20% more free space than the checkpoint is expected to take


def save_checkpoint(state: dict, path: Path) -> bool:
    """Write to a temporary file and rename it into place: a crash mid-write keeps the old file.

    Before writing, the free space of the folder is compared with the size of the folder's newest
    checkpoint (checkpoints of one run are all about that size). Too little: a warning, nothing is
    written (the previous files stay) and False is returned; the run goes on and tries again at the
    next checkpoint. A write that fails all the same (disk full meanwhile) leaves no partial file
    and raises CheckpointError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"Could not create {path.parent} ({err.strerror or err}): make the output folder "
                              "writable, or train with hydra.run.dir=<a writable folder>.") from None
    sizes = [p.stat().st_size for p in path.parent.glob(f"*{CHECKPOINT_SUFFIX}")]
    # The first checkpoint has no predecessor to measure: the tensors' own size stands in.
    needed, free = (max(sizes) if sizes else tensor_bytes(state)) * SPACE_MARGIN, shutil.disk_usage(path.parent).free
    if free < needed:
        log.warning("Only %.0f MB free in %s; %s needs about %.0f MB. Not written: the previous checkpoints stay. "
                    "Free some space (the run tries again at the next checkpoint).", free / 1e6, path.parent,
                    path.name, needed / 1e6)
        return False
    tmp = temporary_path(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        lines = str(err).strip().splitlines() or [type(err).__name__]
        why = err.strerror if isinstance(err, OSError) and err.strerror else lines[-1]
        raise CheckpointError(f"Could not write {path} ({why}); no partial file was left and the previous checkpoints "
                              f"are intact. Free space in {path.parent}, then resume with "
                              f"runtime.resume_from={path.parent.parent}.") from None
    return True


def tensor_bytes(state) -> int:
    """Bytes of the tensors in a (nested) checkpoint dict: about the size torch.save writes."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v) for v in state)
    return 0


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint without running pickled code (weights_only). A run dir means its last.pth."""
    path = Path(path).expanduser()
    if path.is_dir():
        run = RunDir(path)
        path = run.last_checkpoint if run.has_checkpoints() else path / run.last_checkpoint.name
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Give a .pth file or a run directory.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, ...: all mean "not loadable"
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(err).__name__}: {err}). "
                              "It may be truncated or not a detect checkpoint.") from err
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a detect checkpoint (no 'model' entry).")
    state["path"] = str(path)
    return state


def is_better(new: float | None, best: float | None, min_delta: float = 0.0) -> bool:
    """Higher is better, by more than `min_delta`; NaN/None never counts as better, nor does COCO's -1
    ("nothing to score": the split has no ground-truth box); an equal score keeps the old best."""
    if new is None or math.isnan(new) or new < 0:
        return False
    return best is None or math.isnan(best) or new > best + min_delta


def prune_epoch_checkpoints(folder: Path, max_keep: int) -> list[Path]:
    """Delete the oldest epoch_N.pth beyond `max_keep` (best_* and last.pth are other names and
    never touched). Returns the removed paths. max_keep < 0 keeps everything."""
    if max_keep < 0:
        return []
    epochs = sorted((n, p) for p in Path(folder).glob(f"epoch_*{CHECKPOINT_SUFFIX}")
                    if (n := epoch_of_checkpoint(p)) is not None)
    doomed = [p for _, p in epochs[: max(0, len(epochs) - max_keep)]]
    for path in doomed:
        path.unlink()
    return doomed


def find_checkpoint(run: str | None, checkpoint: str) -> Path:
    """The .pth file that `run` + `checkpoint` name (best | last | epoch_N | a path): what detect.test loads."""
    named = is_checkpoint_name(str(checkpoint))
    if run is None:
        path = Path(str(checkpoint)).expanduser()
        if named:  # the command line is incomplete (exit 2)
            raise ConfigError(f"checkpoint={checkpoint} needs run=<run dir>, or give the path of an existing .pth file "
                              f"(checkpoint=path/to/file.pth).")
        if not path.is_file():  # a file that is not there (exit 1, as any missing input)
            raise CheckpointError(f"checkpoint={checkpoint} does not exist: give the path of an existing .pth file, "
                                  "or run=<run dir> with checkpoint=best|last|epoch_N.")
        return path
    run_dir = RunDir(Path(run))
    ckpt_dir = run_dir.checkpoints
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"run={run} has no checkpoints/ folder: give a run directory "
                              "(outputs/<member>/<run_name>/<time>) or checkpoint=<path>.pth without run.")
    available = [p.name for p in run_dir.all_checkpoints()]
    if checkpoint == "best":
        best = run_dir.best_checkpoints()
        if len(best) == 1:
            return best[0]
        why = "none (the run never evaluated)" if not best else f"several: {[p.name for p in best]}"
        raise CheckpointError(f"checkpoint=best: {ckpt_dir} holds {why}. Name one: checkpoint=last, "
                              f"checkpoint=epoch_N or a path. Available: {available}")
    path = ckpt_dir / f"{checkpoint}{CHECKPOINT_SUFFIX}" if named else Path(str(checkpoint)).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint={checkpoint}: {path} does not exist. Available in {ckpt_dir}: {available}")
    return path


class CheckpointManager:
    """The checkpoints/ folder of one run: last.pth, epoch_N.pth (pruned to max_keep) and exactly
    one best_<monitor>_epoch_N.pth. `enabled=False` (DDP ranks other than 0) writes nothing."""

    def __init__(self, run_dir: RunDir, monitor: str, max_keep: int, enabled: bool = True):
        self.run_dir = run_dir
        self.monitor = monitor
        self.max_keep = max_keep
        self.enabled = enabled
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_path: Path | None = None
        self.last_written: bool | None = None  # whether the latest save_last wrote the file (disk space)
        if enabled:
            run_dir.checkpoints.mkdir(parents=True, exist_ok=True)

    @property
    def last_path(self) -> Path:
        return self.run_dir.last_checkpoint

    def save_last(self, state: dict) -> bool:
        """last.pth; False when it was not written (too little disk space: the previous one stays)."""
        self.last_written = save_checkpoint(state, self.last_path) if self.enabled else True
        return self.last_written

    def save_epoch(self, state: dict, epoch: int) -> None:
        """epoch_N.pth, then the oldest beyond max_keep are removed."""
        if not self.enabled:
            return
        save_checkpoint(state, self.run_dir.epoch_checkpoint(epoch))
        for path in prune_epoch_checkpoints(self.run_dir.checkpoints, self.max_keep):
            log.info("Removed %s (runtime.max_keep_ckpts=%d)", path.name, self.max_keep)

    def save_best_if_better(self, state_for, epoch: int, score: float | None) -> bool:
        """Keep exactly one best file: a strictly better score replaces it, anything else keeps it.
        `state_for()` makes the checkpoint (called only when one is written). True when this epoch
        became the best."""
        if score is not None and score < 0:
            log.warning("%s=%s at epoch %d: COCO found nothing to score (the val split has no ground-truth box "
                        "for it), so no best checkpoint is kept. Check the val file.", self.monitor, score, epoch)
            return False
        if not is_better(score, self.best_score):
            log.info("%s=%s at epoch %d; best stays %s (epoch %s)", self.monitor, score, epoch, self.best_score,
                     self.best_epoch)
            return False
        old_path, old_score, old_epoch = self.best_path, self.best_score, self.best_epoch
        new_path = self.run_dir.best_checkpoint(self.monitor, epoch)
        self.best_score, self.best_epoch = score, epoch  # the checkpoint records the new best
        if self.enabled and not save_checkpoint(state_for(), new_path):  # too little disk space: keep the old best
            self.best_score, self.best_epoch = old_score, old_epoch
            return False
        self.best_path = new_path
        if self.enabled and old_path is not None and old_path != new_path and old_path.exists():
            old_path.unlink()
        log.info("New best %s=%.4f at epoch %d (was %s) -> %s", self.monitor, score, epoch, old_score, new_path.name)
        return True

    def restore(self, state: dict) -> None:
        """Take over the best of a resumed checkpoint; its best file is copied into this run's
        checkpoints/ when it lives elsewhere (a run continued in a new folder keeps its best)."""
        self.best_score, self.best_epoch = state.get("best_score"), state.get("best_epoch")
        old_best = state.get("best_checkpoint")
        if old_best and not Path(old_best).is_file():  # the old run dir was moved: look beside the checkpoint
            old_best = str(Path(state["path"]).parent / Path(old_best).name)
        if old_best and Path(old_best).is_file():
            self.best_path = self.run_dir.checkpoints / Path(old_best).name
            if Path(old_best).resolve() != self.best_path.resolve() and self.enabled:
                shutil.copy2(old_best, self.best_path)


def load_model_weights(model: torch.nn.Module, state: dict, model_name: str, classes: list[str],
                       new_classes_ok: bool = False) -> None:
    """Load a checkpoint's weights, saying which classes and model it was made for if they do not fit.

    `new_classes_ok` (runtime.load_from, a fine-tuning start): a checkpoint of the same model trained on
    other classes loads every tensor but the class-dependent layers, which keep their fresh
    initialisation and are listed in the log (MMDetection's load_from does the same)."""
    saved_classes = state.get("classes")
    if new_classes_ok and saved_classes is not None and list(saved_classes) != list(classes):
        _load_for_new_classes(model, state, model_name, list(classes))
        return
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise _does_not_fit(state, model_name, classes, str(err).splitlines()[0]) from err


def _does_not_fit(state: dict, model_name: str, classes: list[str], detail: str) -> CheckpointError:
    made_for = state.get("config", {}).get("model", {}).get("name", "?")
    return CheckpointError(
        f"The weights in {state['path']} do not fit this model: it was saved by model {made_for} "
        f"with classes {state.get('classes')}; this run builds {model_name} with classes "
        f"{list(classes)}. ({detail})")


def _load_for_new_classes(model: torch.nn.Module, state: dict, model_name: str, classes: list[str]) -> None:
    from detect.models.pretrained import load_mapped_state_dict

    weights = state["model"]
    ours = model.state_dict()
    # Only the class layers may differ: any other difference means another architecture, and loading
    # "what fits" of it would start a run from a silently different model.
    missing = [k for k in ours if k not in weights and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in weights if k not in ours]
    if missing or unexpected:
        raise _does_not_fit(state, model_name, classes, "keys only this model has: " + ", ".join(missing[:3])
                            if missing else "keys only the checkpoint has: " + ", ".join(unexpected[:3]))
    report = load_mapped_state_dict(model, weights, key_map=())
    log.info("Loaded %d tensors of %s (runtime.load_from): trained on classes %s, this run's are %s.",
             len(report.loaded), state["path"], state.get("classes"), classes)
    for key, here, there in report.reinitialised:
        log.info("  re-initialised %s: %s here, %s in the checkpoint", key, here, there)
    if not report.reinitialised:
        log.warning("The checkpoint has as many classes as this run but other names: its class layers were loaded "
                    "as they are, so class k starts as the checkpoint's class k (%s -> %s).",
                    state.get("classes"), classes)
