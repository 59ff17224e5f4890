"""Optuna search and the launchers run real (tiny) training jobs through Hydra's plugins."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import compose_train, run_cli, tiny_train_args

ONE_EPOCH = ["schedule.epochs=1", "runtime.max_iters_per_epoch=2"]


def job_summaries(sweep) -> dict[str, dict]:
    return {d.name: json.loads((d / "summary.json").read_text())
            for d in sorted(sweep.iterdir()) if (d / "summary.json").is_file()}


def test_optuna_search_maximizes_the_best_map50_of_its_trials(tiny_demo_root, tmp_path):
    sweep = tmp_path / "optuna"
    args = tiny_train_args(tiny_demo_root, tmp_path / "unused", *ONE_EPOCH)
    search = ["hparams_search=demo_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=1"]
    proc = run_cli([*search, *args, f"hydra.sweep.dir={sweep}"])  # no -m: the search config sets the multirun mode
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    jobs = job_summaries(sweep)
    assert list(jobs) == ["0", "1"] and all(j["status"] == "finished" for j in jobs.values())
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(j["best_score"] for j in jobs.values()))
    assert set(result["best_params"]) == {"schedule.lr", "schedule.weight_decay"}
    for job in jobs.values():  # each trial ran with the values Optuna proposed
        assert any(o.startswith("schedule.lr=") for o in job["overrides"])
    assert "| 0 | schedule.lr=" in (sweep / "sweep_summary.md").read_text()


def test_submitit_launcher_runs_each_job_as_its_own_process(tiny_demo_root, tmp_path):
    """The SLURM launcher's code path, with submitit's local executor."""
    sweep = tmp_path / "submitit"
    args = tiny_train_args(tiny_demo_root, tmp_path / "unused", *ONE_EPOCH)
    proc = run_cli(["-m", "hydra/launcher=local_submitit", "schedule.lr=0.001,0.002", *args,
                    f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    jobs = job_summaries(sweep)
    assert [j["status"] for j in jobs.values()] == ["finished", "finished"]
    assert [j["overrides"][0] for j in jobs.values()] == ["schedule.lr=0.001", "schedule.lr=0.002"]
    logs = list((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # one submitit log per job, as on the cluster
    assert "| 1 | schedule.lr=0.002 | finished |" in (sweep / "sweep_summary.md").read_text()


def test_the_launcher_configs_compose_with_the_team_settings():
    slurm = compose_train(["hydra/launcher=slurm"]).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.gpus_per_node, slurm.tasks_per_node, slurm.max_num_timeout) == (1, 1, 0)
    assert slurm.submitit_folder.endswith("/.submitit/%j")
    joblib = compose_train(["hydra/launcher=local_parallel"]).hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher") and joblib.n_jobs == 2
    search = compose_train(["hparams_search=sgd_lr_optuna", "model=faster_rcnn"])
    assert search.hydra.sweeper.direction == "maximize" and search.runtime.monitor == "bbox_mAP_50"
    assert search.schedule.name == "1x"  # the search space fits the SGD schedules it is meant for
