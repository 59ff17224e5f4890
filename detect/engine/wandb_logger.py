"""Weights & Biases logging that never blocks training: an optional sink beside the run directory.

`WandbLogger` mirrors what the run directory records (train.log, metrics.jsonl) to a W&B run.
The rules (config keys under `runtime.wandb`, see conf/runtime/default.yaml):

- Off unless `runtime.wandb.enabled=true`; `wandb` is imported only then, so `--help` and runs
  without W&B never load it.
- Mode: `runtime.wandb.mode` when set; else `$WANDB_MODE` when set; else `offline` when no API key
  is configured (no `$WANDB_API_KEY` and no netrc entry for the W&B host), else `online`. Offline
  runs are written to `<run_dir>/wandb/offline-run-*` and can be uploaded later with `wandb sync`.
- The W&B run: project/entity from the config, dir = the run dir, group = member, name = the
  experiment (`run_name`) plus its command-line overrides, tags = model, data and `fold<k>`,
  config = the resolved composed config (plus the overrides).
- Logged: training losses and lr at each log interval (`train/...`), every evaluation metric
  (`val/bbox_mAP_50`, ...) and the classwise AP table (`val/classwise`: class, AP, AP50), all
  plotted against `iter`, the global iteration; opt-in (`log_checkpoint`), the best checkpoint as a
  model artifact at the end of the run. `iter` is a logged value, not wandb's own step: a run resumed
  from an earlier checkpoint goes back in iterations, and wandb drops rows whose step goes back.
- Resume: the W&B run id is kept in summary.json and in every checkpoint (`wandb_run_id`); a run
  started with `runtime.resume_from=...` continues that W&B run (`id=<old id>, resume="allow"`).
- Failures: any W&B problem (import, init, network, key, quota, a log call raising) logs ONE
  warning on the "detect" logger and turns this logger off; training goes on with its local logs.
  `init_timeout` bounds how long `wandb.init` may wait; `finish_timeout` bounds the final upload.
- `finish(status)` is called from the trainer's `finally`: exit code 0 for a finished run, 1 for a
  failed or interrupted one, so a failing multirun job never leaves a W&B run open.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("detect")

MAX_NAME_CHARS = 128  # W&B display names longer than this are cut by the web UI anyway
# Overrides that say where or how a run executes, not what it trains: left out of the run name.
NAME_SKIPS = ("data.root=", "runtime.wandb.", "runtime.resume_from=", "runtime.device=", "runtime.workers=",
              "runtime.threads=", "runtime.pin_memory=")


def has_api_key(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a W&B API key is configured: `$WANDB_API_KEY`, or a netrc entry (`$NETRC`, else
    ~/.netrc) for the W&B host (`$WANDB_BASE_URL`, default api.wandb.ai), as `wandb login` writes."""
    if environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    path = Path(environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def choose_mode(configured: str | None, environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(mode, why): the config's mode, else $WANDB_MODE, else offline without an API key, else online."""
    if configured:
        return str(configured), "runtime.wandb.mode"
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"], "WANDB_MODE"
    if has_api_key(environ):
        return "online", "an API key is configured"
    return "offline", "no API key: WANDB_API_KEY is unset and netrc has no entry for the W&B host"


def run_name(experiment: str, overrides: list[str]) -> str:
    """The experiment's name plus the overrides that change what is trained, cut to MAX_NAME_CHARS."""
    name = " ".join([experiment, *(o for o in overrides if not o.lstrip("+~").startswith(NAME_SKIPS))])
    return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS - 3] + "..."


def run_tags(cfg: DictConfig) -> list[str]:
    fold = cfg.data.get("fold")
    return [str(cfg.model.name), str(cfg.data.name), *([f"fold{fold}"] if fold is not None else [])]


class WandbLogger:
    """One optional W&B run per training run; every method is a no-op when W&B is off or has failed."""

    def __init__(self) -> None:
        self.wandb: Any = None  # the module, imported by start()
        self.run: Any = None  # the wandb Run; kept after a failure so finish() can still close it
        self.run_id: str | None = None
        self.failed = False
        self.log_checkpoint = False

    @property
    def active(self) -> bool:
        return self.run is not None and not self.failed

    def _guarded(self, action: str, call: Callable[[], Any]) -> Any:
        """Run a W&B call; on any error, warn once, turn W&B off for this run and carry on."""
        try:
            return call()
        except Exception as err:  # W&B must never stop training (KeyboardInterrupt still does)
            if not self.failed:
                self.failed = True
                log.warning("W&B logging failed while %s (%s: %s). W&B is off for the rest of this run; "
                            "training continues with local logs (train.log, metrics.jsonl).", action,
                            type(err).__name__, " ".join(str(err).split()))  # wandb's messages span lines
            return None

    # ---------------------------------------------------------------- start
    def start(self, cfg: DictConfig, run_dir: Path, overrides: list[str], resume_id: str | None = None) -> None:
        """Open the W&B run if `runtime.wandb.enabled`; `resume_id` continues an earlier W&B run."""
        options = cfg.runtime.get("wandb")
        if not options or not options.get("enabled"):
            return
        mode, why = choose_mode(options.get("mode"))
        if mode == "disabled":
            log.info("W&B logging is disabled (%s=disabled)", why)
            return
        self.log_checkpoint = bool(options.get("log_checkpoint"))
        self._guarded("starting the run", lambda: self._init(cfg, Path(run_dir), overrides, resume_id, mode, why))

    def _init(self, cfg: DictConfig, run_dir: Path, overrides: list[str], resume_id: str | None, mode: str,
              why: str) -> None:
        import wandb  # here, not at module level: only a run with W&B enabled pays for the import

        self.wandb = wandb
        options = cfg.runtime.wandb
        config = OmegaConf.to_container(cfg, resolve=True)
        config.pop("hydra", None)
        self.run = wandb.init(
            project=options.project,
            entity=options.get("entity"),
            dir=str(run_dir),  # offline files land in <run_dir>/wandb/
            mode=mode,
            group=str(cfg.get("member")),
            name=run_name(str(cfg.get("run_name")), list(overrides)),
            tags=run_tags(cfg),
            config={**config, "overrides": list(overrides)},
            id=resume_id,
            resume="allow" if resume_id else None,
            settings=wandb.Settings(init_timeout=float(options.get("init_timeout", 60)),
                                    finish_timeout=float(options.get("finish_timeout", 0)),
                                    reinit="finish_previous"),  # a sequential multirun opens one run per job
        )
        self.run_id = self.run.id
        # Plot everything against the global iteration (a logged value: see the module docstring).
        self.run.define_metric("iter")
        self.run.define_metric("*", step_metric="iter")
        where = (f"files in {Path(self.run.dir).parent}, upload them later with `wandb sync`" if mode == "offline"
                 else self.run.url)
        log.info("W&B run %s%s, %s (%s): %s", self.run_id, " (resumed)" if resume_id else "", mode, why, where)

    # ---------------------------------------------------------------- logging
    def log_train(self, record: dict) -> None:
        """A training log record (see detect.engine.hooks.metrics): losses, lr, s/iter."""
        if not self.active:
            return
        timing = ("lr", "sec_per_iter", "data_time", "gpu_mem_peak_mb")
        values = {f"train/{k}": v for k, v in record.items() if k.startswith("loss") or k in timing}
        self._guarded("logging training losses",
                      lambda: self.run.log({**values, "epoch": record["epoch"], "iter": record["iter"]}))

    def log_eval(self, epoch: int, iteration: int, metrics: dict) -> None:
        """The evaluation's metrics (bbox_mAP, bbox_mAP_50, ...) and its classwise AP table."""
        if not self.active:
            return

        def log_metrics() -> None:
            values = {f"val/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
            rows = [[name, ap.get("AP"), ap.get("AP50")] for name, ap in metrics.get("classwise", {}).items()]
            values["val/classwise"] = self.wandb.Table(columns=["class", "AP", "AP50"], data=rows)
            self.run.log({**values, "epoch": epoch, "iter": iteration})

        self._guarded("logging evaluation metrics", log_metrics)

    def log_best_checkpoint(self, path: Path | None, metadata: dict | None = None) -> None:
        """Upload the best checkpoint as a model artifact (only with `runtime.wandb.log_checkpoint`)."""
        if not (self.active and self.log_checkpoint and path is not None):
            return

        def upload() -> None:
            artifact = self.wandb.Artifact(f"model-{self.run_id}", type="model", metadata=metadata or {})
            artifact.add_file(str(path), policy="immutable")  # no staging copy: the file does not change now
            self.run.log_artifact(artifact, aliases=["best"])

        self._guarded("uploading the best checkpoint", upload)

    # ---------------------------------------------------------------- end
    def finish(self, status: str) -> None:
        """Close the run (also after a failure): exit code 0 when `status` is finished, else 1."""
        run, self.run = self.run, None
        if run is not None:
            self._guarded("closing the run", lambda: run.finish(exit_code=0 if status == "finished" else 1))
