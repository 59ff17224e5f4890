"""What detect.train settles before Hydra starts a single run, so that Hydra never writes into a folder
that belongs to another run (Hydra writes `.hydra/config.yaml`, `overrides.yaml` and appends to
`train.log` before any code of ours runs):

- a new run: its folder is created here with an exclusive mkdir and given to Hydra as hydra.run.dir;
  when another launch took `<time>` in the same second, this one gets `<time>_2` (then `_3`, ...);
- `hydra.run.dir=X` naming a folder that already holds a run, without resuming it: refused;
- an in-place resume (`runtime.resume_from=<run dir>|auto`): refused while another process writes
  that run (its `.lock`), and refused when the config differs from the run's own in a key that
  changes the result (the keys are named, and `runtime.load_from` is the way to start a new run from
  those weights). A run folder describes one config, so its numbers stay attributable. What may
  differ is how it runs: KEYS_A_RESUME_MAY_CHANGE. The run's original `.hydra/` files stay as
  they are: Hydra writes the resume's own into `.hydra/resumed_<time>/`.

A refusal changes nothing on disk. Composing costs about 0.2 s and imports no torch.

`check_output_folder` (every Hydra command, before Hydra creates its folder): the output folder can be
created, so a read-only or over-long path gives one message instead of Hydra's traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from detect.errors import RunFilesError, UsageError
from detect.run.leaderboard import flatten
from detect.run.lock import RunLock, read_holder
from detect.run.paths import HYDRA_DIR, RunDir, SweepDir
from detect.run.resume import RESUME_KEY, _value

# How a run is executed, not what it computes: a resume may change these (data.root: the same data
# mounted elsewhere, e.g. resuming on another machine).
# schedule.epochs: a finished (or running) run may be extended; the lr schedule is re-planned (detect/engine/fit.py).
KEYS_A_RESUME_MAY_CHANGE = (RESUME_KEY, "runtime.device", "runtime.workers", "runtime.threads", "runtime.pin_memory",
                            "runtime.progress", "runtime.log_interval", "runtime.wandb", "data.root", "schedule.epochs",
                            "runtime.early_stopping", "runtime.profile")
RUN_DIR_OVERRIDE = "hydra.run.dir="
SWEEP_DIR_OVERRIDE = "hydra.sweep.dir="
NAME_MAX = 255  # bytes in one file or folder name (ext4, xfs, NTFS, APFS)
_lock: RunLock | None = None  # held from here to the end of the process's training (fit takes it over)
_created: Path | None = None  # the folder this process created for its run (removed if nothing is written there)


def changed_keys(saved: dict, now: dict) -> list[str]:
    """`key: saved -> now` for keys both configs have whose values differ (as written: interpolations
    unresolved), the keys a resume may change left out. Keys only one side has are left out too: they
    come from a newer or older detect, not from the command line."""
    a, b = flatten(saved), flatten(now)
    allowed = KEYS_A_RESUME_MAY_CHANGE
    return [f"{key}: {a[key]!r} -> {b[key]!r}" for key in sorted(a.keys() & b.keys())
            if a[key] != b[key] and not any(key == k or key.startswith(k + ".") for k in allowed)]


def prepare_single_run(argv: Sequence[str], config_name: str = "train", config_dir: Path | None = None) -> list[str]:
    """Settle the folder of the run this command line starts and take its lock; return the overrides
    to add: the folder as hydra.run.dir (so Hydra never decides again) and, for an in-place resume,
    where Hydra writes its files. Does nothing for --cfg and other flags; -m: see prepare_sweep."""
    global _lock, _created
    from detect.run import resume as plan

    overrides = [a for a in argv if not a.startswith("-")]
    flags = [a for a in argv if a.startswith("-")]
    if flags and set(flags) <= {"-m", "--multirun"}:
        return prepare_sweep(overrides, config_name, config_dir)
    if flags:  # --cfg, --info, ...: nothing runs
        return []
    cfg = _compose(config_name, overrides, config_dir)
    plan.last_decision = None
    target = RunDir(Path(str(OmegaConf.select(cfg, "hydra.run.dir"))))
    decision = plan.last_decision[0] if plan.last_decision else "named"  # the resolver did not run: the user's own
    check_writable_folder(target.root)
    if decision == "new":  # <time> (or <time>_2 when another launch took <time> meanwhile), locked at once
        _created = claim_new_folder(target.root)
        _lock = RunLock(RunDir(_created))
        _lock.acquire()
        return [RUN_DIR_OVERRIDE + override_value(str(_created))]
    resume = _value(OmegaConf.select(cfg, RESUME_KEY))
    if not target.holds_a_run():  # a named folder of the user's own, new or empty: taken now
        _created = None if target.root.exists() else target.root
        _lock = RunLock(target)
        _lock.acquire()
        return []
    if decision == "named" and not (resume and _resumes_in_place(resume, target)):
        raise UsageError(f"hydra.run.dir={target} already holds a run; a new run never writes into another's "
                         f"folder. Choose another folder, or continue that run with {RESUME_KEY}={target}.")
    _lock = RunLock(target)
    _lock.acquire()  # refused while another process trains there
    try:
        check_same_config(target, cfg)
    except BaseException:
        _lock.release()  # a refused resume leaves nothing behind, its lock included
        raise
    return [RUN_DIR_OVERRIDE + override_value(str(target.root)),
            f"hydra.output_subdir={target.resumed_hydra_subdir(time.strftime('%Y-%m-%d_%H-%M-%S'))}"]


def check_same_config(target: RunDir, cfg: DictConfig) -> None:
    """UsageError naming the keys in which `cfg` differs from the run's own config (see changed_keys)."""
    try:
        saved = yaml.safe_load(target.config_file.read_text()) if target.config_file.is_file() else None
    except (OSError, yaml.YAMLError) as err:
        raise RunFilesError(f"{target.config_file} cannot be read ({err}); the run's config is needed to resume it. "
                            f"Start a new run from its weights with runtime.load_from={target.last_checkpoint}.") \
            from None
    now = OmegaConf.to_container(cfg, resolve=False)
    now.pop("hydra", None)
    changed = changed_keys(saved if isinstance(saved, dict) else {}, now)
    if changed:
        raise UsageError(
            f"{RESUME_KEY} would continue {target} with another config: " + "; ".join(changed) + ". A run folder "
            f"holds one config. To train on from its weights with these settings, start a new run with "
            f"runtime.load_from={target.last_checkpoint}; to continue the run itself, drop those overrides.")


def prepare_sweep(overrides: list[str], config_name: str, config_dir: Path | None) -> list[str]:
    """A multirun's folder: claimed like a run's (`multirun_<time>_2` when another sweep took the
    name in the same second); a named hydra.sweep.dir that already holds jobs is refused. Each job
    then takes the lock of its own folder (fit)."""
    global _created
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]  # as Hydra names the sweep folder
    cfg = _compose(config_name, fixed, config_dir)
    sweep = SweepDir(Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))))
    check_writable_folder(sweep.root, "hydra.sweep.dir")
    if any(o.startswith(SWEEP_DIR_OVERRIDE) for o in overrides):
        if sweep.root.is_dir() and sweep.job_dirs():
            raise UsageError(f"hydra.sweep.dir={sweep.root} already holds the jobs of a sweep; a new sweep never "
                             "writes into another's folder. Choose another hydra.sweep.dir.")
        return []
    _created = claim_new_folder(sweep.root)
    return [SWEEP_DIR_OVERRIDE + override_value(str(_created))]


def claim_new_folder(folder: Path) -> Path:
    """`folder`, created now; `folder_2`, `folder_3`, ... when another process created it first."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = folder, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = folder.with_name(f"{folder.name}_{n}")


def override_value(text: str) -> str:
    """`text` as a Hydra override value: as it is when plain ASCII, else quoted (spaces, commas,
    brackets, non-ASCII letters). In a quoted value only a quote and the backslashes before a quote
    (or before the closing quote) are escaped."""
    if re.fullmatch(r"[A-Za-z0-9_./+-]+", text):
        return text
    quote = "'" if "'" not in text or '"' in text else '"'
    escaped = re.sub(r"(\\*)(" + quote + r"|$)", lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""),
                     text)
    return quote + escaped + quote


def remove_unused_folder(folder: str | Path) -> None:
    """Remove a run (or sweep) folder nothing was written into (no summary.json, no folder but .hydra:
    Hydra's files at most), after a Ctrl-C or failure while starting up. A folder this process did not create for a
    new run (a resume's, a user's own) is kept."""
    run = RunDir(Path(folder))
    if _created is None or not run.root.is_dir() or run.root.resolve() != _created.resolve():
        return
    holder = read_holder(run)
    if holder is not None and holder.get("pid") != os.getpid():
        return  # another process writes here
    if run.summary_file.exists() or any(p.is_dir() and p.name != HYDRA_DIR for p in run.root.iterdir()):
        return  # the run wrote something (checkpoints/, plots/), or a sweep's jobs started
    shutil.rmtree(run.root, ignore_errors=True)


def created_folder() -> Path | None:
    return _created


def release_start_lock() -> None:
    """Give up the lock taken at start-up (a run that failed before the trainer took it over)."""
    if _lock is not None:
        _lock.release()


def check_output_folder(argv: Sequence[str], config_name: str, config_dir: Path | None = None) -> None:
    """Raise UsageError for a folder name too long for the file system, RunFilesError when the folder
    cannot be created (a read-only place, a file where a folder should be). Nothing for flags."""
    overrides = [a for a in argv if not a.startswith("-")]
    if len(overrides) != len(argv):
        return
    cfg = _compose(config_name, overrides, config_dir)
    key = "out" if config_name == "browse" else "hydra.run.dir"  # the key a user of that command sets
    check_writable_folder(Path(str(OmegaConf.select(cfg, "hydra.run.dir"))), key)


def check_writable_folder(folder: Path, key: str = "hydra.run.dir") -> None:
    """See check_output_folder. Probes by creating (and removing) an empty folder where the output
    folder would be made: permission bits do not tell (root, read-only mounts)."""
    for part in folder.parts:
        if len(part.encode()) > NAME_MAX:
            raise UsageError(f"{key}: the folder name {part[:40]}... is {len(part.encode())} bytes; file systems "
                             f"allow {NAME_MAX}. Shorten run_name (or the experiment's name).")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunFilesError(f"{key}={folder}: {existing} is a file, not a folder. Choose another output folder.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".detect_probe_", dir=existing))
    except OSError as err:
        raise RunFilesError(f"Cannot create {folder}: {existing} is not writable ({err.strerror}). Run from a "
                            f"writable folder, or set {key}=<a writable folder>.") from None


def _resumes_in_place(resume: str, target: RunDir) -> bool:
    """Whether resume_from names the folder hydra.run.dir names (the run itself, its checkpoints/ or last.pth)."""
    path = Path(resume).expanduser().resolve()
    return target.root.resolve() in (path, path.parent, path.parent.parent)


def _compose(config_name: str, overrides: list[str], config_dir: Path | None) -> DictConfig:
    from detect.config.help import CONF_DIR, compose_with_hydra

    return compose_with_hydra(config_name, overrides, config_dir or CONF_DIR)
