"""W&B logging (detect.engine.wandb_logger): what an offline run records, and that no W&B failure
ever stops training. No network: the CLI run is offline, the in-process runs use a fake `wandb`."""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import types

import pytest
import torch
from omegaconf import open_dict

from detect.engine.fit import fit as fit_run
from detect.engine.wandb_logger import choose_mode, has_api_key, run_name
from tests.conftest import REPO, TINY, compose_train, run_cli, tiny_train_args

FAST = ["runtime.max_iters_per_epoch=2", "runtime.wandb.enabled=true"]


@pytest.fixture
def wandb_env(tmp_path, monkeypatch) -> dict:
    """Offline W&B whose own folders (cache, config, staging) live in tmp_path, never in $HOME."""
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "DETECT_MEMBER": "tester",
           **{f"WANDB_{kind}_DIR": str(tmp_path / f"wandb_{kind.lower()}") for kind in ("CACHE", "CONFIG", "DATA")},
           "WANDB_DIR": str(tmp_path / "wandb_dir")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


# ---------------------------------------------------------------- reading an offline run
def read_wandb_records(path) -> list:
    """The protobuf records of a `.wandb` file: a LevelDB-style log (7-byte file header, 32 KiB
    blocks, each chunk with a 7-byte header: crc32, length, type FULL=1/FIRST=2/MIDDLE=3/LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunk, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def test_offline_run_logs_losses_metrics_table_and_checkpoint_into_the_run_dir(tiny_demo_root, tmp_path,
                                                                               wandb_env):
    run_dir = tmp_path / "run"
    proc = run_cli(tiny_train_args(tiny_demo_root, run_dir, *FAST, "schedule.epochs=1",
                                   "runtime.wandb.log_checkpoint=true"),
                   env=wandb_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    run_id = summary["wandb_run_id"]
    assert torch.load(run_dir / "checkpoints" / "last.pth", weights_only=False)["wandb_run_id"] == run_id
    [offline] = (run_dir / "wandb").glob(f"offline-run-*-{run_id}")
    records = read_wandb_records(offline / f"run-{run_id}.wandb")
    by_type: dict[str, list] = {}
    for record in records:
        by_type.setdefault(record.WhichOneof("record_type"), []).append(record)

    [run] = by_type["run"]
    assert run.run.project == "detect" and run.run.run_group == "tester"
    assert list(run.run.tags) == ["faster_rcnn_r18_demo", "demo"]
    assert run.run.display_name.startswith("faster_rcnn_r18_demo_demo data.demo.num_train=8")
    assert "data.root" not in run.run.display_name
    assert {u.key for u in run.run.config.update} >= {"model", "data", "schedule", "runtime", "overrides"}

    rows = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in by_type["history"]]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["iter"] for r in train_rows] == [1, 2]
    assert all(r["train/lr"] > 0 and "train/loss_classifier" in r for r in train_rows)
    [val] = [r for r in rows if "val/bbox_mAP_50" in r]
    assert val["epoch"] == 1 and val["iter"] == 2
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert val["val/bbox_mAP_50"] == pytest.approx(metrics[-1]["bbox_mAP_50"])
    assert val["val/classwise/_type"] == "table-file" and val["val/classwise/nrows"] == 10
    table = json.loads((offline / "files" / val["val/classwise/path"]).read_text())
    assert table["columns"] == ["class", "AP", "AP50"] and len(table["data"]) == 10

    [model] = [r.artifact for r in by_type["artifact"] if r.artifact.type == "model"]
    assert model.name == f"model-{run_id}" and "best" in model.aliases
    assert [e.path for e in model.manifest.contents] == ["best_bbox_mAP_50_epoch_1.pth"]
    assert by_type["exit"][0].exit.exit_code == 0
    assert "W&B run" in (run_dir / "train.log").read_text()


# ---------------------------------------------------------------- in-process runs with a fake wandb
class FakeRun:
    def __init__(self, run_id: str, fail_at_log: int | None = None):
        self.id, self.dir, self.url = run_id, "/nowhere/wandb/offline-run-x/files", None
        self.fail_at_log, self.logged, self.exit_code = fail_at_log, [], None

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, values: dict):
        self.logged.append(values)
        if len(self.logged) == self.fail_at_log:
            raise RuntimeError("quota exceeded")

    def log_artifact(self, artifact, aliases=None):
        pass

    def finish(self, exit_code=None):
        self.exit_code = exit_code


def fake_wandb(monkeypatch, init) -> types.ModuleType:
    module = types.ModuleType("wandb")
    module.init = init
    module.Settings = lambda **kwargs: kwargs
    module.Table = lambda columns, data: {"columns": columns, "data": data}
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def fit(tiny_demo_root, run_dir, *extra: str, epochs: int = 1) -> None:
    cfg = compose_train([f"data.root={tiny_demo_root}", *TINY, *FAST, f"schedule.epochs={epochs}", *extra])
    with open_dict(cfg):
        del cfg["hydra"]  # as under @hydra.main: the job's config has no hydra node
    fit_run(cfg, run_dir, {"overrides": ["model.x=1"]})


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "detect" and r.levelno == logging.WARNING]


def test_init_that_raises_warns_once_and_training_finishes(tiny_demo_root, tmp_path, wandb_env, monkeypatch,
                                                           caplog):
    def init(**kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    fake_wandb(monkeypatch, init)
    with caplog.at_level(logging.INFO, logger="detect"):
        fit(tiny_demo_root, tmp_path / "run")
    [warning] = warnings_of(caplog)
    assert "starting the run" in warning and "api.wandb.ai unreachable" in warning
    assert "training continues" in warning
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and "wandb_run_id" not in summary
    assert summary["best_checkpoint"]


def test_log_call_that_raises_mid_run_warns_once_and_training_goes_on(tiny_demo_root, tmp_path, wandb_env,
                                                                      monkeypatch, caplog):
    run = FakeRun("abc", fail_at_log=2)
    fake_wandb(monkeypatch, lambda **kwargs: run)
    with caplog.at_level(logging.INFO, logger="detect"):
        fit(tiny_demo_root, tmp_path / "run")
    [warning] = warnings_of(caplog)
    assert "logging training losses" in warning and "quota exceeded" in warning
    assert len(run.logged) == 2  # nothing more is sent after the failure (the evaluation is not)
    assert run.exit_code == 0  # ... but the run is still closed at the end
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["mode"] for line in lines] == ["train", "train", "val"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"


def test_a_failing_run_closes_the_wandb_run_with_exit_code_1(tiny_demo_root, tmp_path, wandb_env, monkeypatch):
    run = FakeRun("abc")
    fake_wandb(monkeypatch, lambda **kwargs: run)

    def broken_step(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr("detect.engine.loop.Trainer.train_step", broken_step)
    with pytest.raises(RuntimeError, match="out of memory"):
        fit(tiny_demo_root, tmp_path / "run")
    assert run.exit_code == 1


def test_resume_continues_the_same_wandb_run(tiny_demo_root, tmp_path, wandb_env, monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        return FakeRun(kwargs["id"] or "first1")

    fake_wandb(monkeypatch, init)
    fit(tiny_demo_root, tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pth"
    assert torch.load(last, weights_only=False)["wandb_run_id"] == "first1"
    fit(tiny_demo_root, tmp_path / "resumed", f"runtime.resume_from={last}", epochs=2)

    assert (calls[0]["id"], calls[0]["resume"]) == (None, None)
    assert (calls[1]["id"], calls[1]["resume"]) == ("first1", "allow")
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["wandb_run_id"] == "first1"
    first = calls[0]
    assert (first["group"], first["tags"], first["name"]) == ("tester", ["faster_rcnn_r18_demo", "demo"],
                                                              "faster_rcnn_r18_demo_demo model.x=1")
    assert first["dir"] == str(tmp_path / "first") and first["settings"]["init_timeout"] == 60


# ---------------------------------------------------------------- the rules, unit by unit
def test_mode_comes_from_config_then_env_then_the_api_key(tmp_path):
    netrc = tmp_path / "netrc"
    assert choose_mode("online", {"WANDB_MODE": "offline"})[0] == "online"
    assert choose_mode(None, {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"})[0] == "disabled"
    assert choose_mode(None, {"WANDB_API_KEY": "k" * 40})[0] == "online"
    assert choose_mode(None, {"NETRC": str(netrc)}) == (
        "offline", "no API key: WANDB_API_KEY is unset and netrc has no entry for the W&B host")
    netrc.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    netrc.chmod(0o600)
    assert has_api_key({"NETRC": str(netrc)}) and choose_mode(None, {"NETRC": str(netrc)})[0] == "online"
    assert not has_api_key({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.com"})


def test_run_name_leaves_out_paths_and_runtime_plumbing_and_stays_short():
    assert run_name("cascade_trash", ["data.root=/data", "data.fold=0", "runtime.wandb.enabled=true",
                                      "schedule.lr=0.01"]) == "cascade_trash data.fold=0 schedule.lr=0.01"
    long = run_name("x", [f"model.k{i}=1" for i in range(40)])
    assert len(long) == 128 and long.endswith("...")


def test_wandb_disabled_by_default_and_never_imported_for_help():
    code = ("import runpy, sys\nsys.argv = ['detect.train', '--help']\n"
            "try:\n    runpy.run_module('detect.train', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import detect.engine.fit\nassert 'wandb' not in sys.modules, 'wandb was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert compose_train().runtime.wandb.enabled is False
