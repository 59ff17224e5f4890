"""The training recipe (schedule.ema, schedule.accumulate, schedule.paramwise, runtime.early_stopping,
a finished run extended with more epochs): each checked against a hand computation on a toy model,
then through real tiny runs for what a user sees (files, summary, log)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from detect.engine.build import Components, parameter_groups
from detect.engine.distributed import SINGLE_PROCESS
from detect.engine.ema import WeightsEMA
from detect.engine.loop import Trainer
from detect.run import RunDir
from detect.run.checkpoints import CheckpointManager, load_checkpoint
from tests.conftest import TINY, compose_train

# ---------------------------------------------------------------------------------------------- EMA


def test_ema_weights_equal_the_closed_form_average():
    model = torch.nn.Linear(2, 1)
    ema = WeightsEMA(model, decay=0.9, warmup_iters=3)
    values = [0.5, -1.0, 2.0, 4.0, 3.0, -2.0]
    expected = None
    for t, value in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        d = 0.9 * (1 - math.exp(-t / 3))  # t earlier updates; the first (t = 0) copies the weights
        expected = value if expected is None else d * expected + (1 - d) * value
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), expected))
    assert ema.done == len(values)


def test_ema_without_warmup_uses_the_decay_from_the_second_update():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = WeightsEMA(model, decay=0.5, warmup_iters=0)
    for value in (4.0, 0.0, 2.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.5 * (0.5 * 4.0 + 0.5 * 0.0) + 0.5 * 2.0)


# ------------------------------------------------------------------------------------- accumulation


class Batches:
    """A loader over fixed batches with what the loop asks of the real one."""

    def __init__(self, batches):
        self.batches, self.generator, self.batch_sampler, self.start = batches, torch.Generator(), self, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.start = start_batch

    def __iter__(self):
        return iter(self.batches[self.start:])

    def __len__(self) -> int:
        return len(self.batches)


class Regression(torch.nn.Module):
    """A toy 'detector' without BatchNorm: the loss is the batch mean of (w . x - y)^2."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)
        torch.nn.init.constant_(self.linear.weight, 0.1)
        torch.nn.init.constant_(self.linear.bias, 0.0)

    def forward(self, images, targets):
        x, y = torch.stack(images), torch.stack([t["y"] for t in targets])
        return {"loss_mse": ((self.linear(x).squeeze(1) - y) ** 2).mean()}


def samples(n: int):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(3, generator=gen) for _ in range(n)], [{"y": torch.randn((), generator=gen)} for _ in range(n)]


def train_toy(batches, accumulate: int) -> Regression:
    model = Regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    parts = Components(place=SINGLE_PROCESS, device=torch.device("cpu"), train_set=None, val_set=None,
                       train_loader=Batches(batches), val_loader=None, iters_per_epoch=len(batches), model=model,
                       train_model=model, optimizer=optimizer,
                       scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0), scaler=None,
                       amp_dtype=None)
    cfg = OmegaConf.create({"schedule": {"epochs": 1, "grad_clip": None, "accumulate": accumulate},
                            "runtime": {"seed": 0, "skip_nonfinite": False}})
    run = RunDir("unused")
    trainer = Trainer(cfg, parts, run, CheckpointManager(run, "bbox_mAP_50", 3, enabled=False), [])
    trainer.train()
    return model, trainer.state.iteration


def test_accumulating_k_batches_of_b_is_one_step_of_a_batch_of_k_times_b():
    images, targets = samples(8)
    two_by_four = [(images[i:i + 2], targets[i:i + 2]) for i in range(0, 8, 2)]  # 4 batches of 2
    eight = [(images, targets)]
    accumulated, steps = train_toy(two_by_four, accumulate=4)
    whole, _ = train_toy(eight, accumulate=1)
    assert steps == 1
    torch.testing.assert_close(accumulated.linear.weight, whole.linear.weight)
    torch.testing.assert_close(accumulated.linear.bias, whole.linear.bias)


def test_the_epochs_short_last_group_is_the_mean_of_its_own_batches():
    images, targets = samples(6)
    batches = [(images[i:i + 2], targets[i:i + 2]) for i in range(0, 6, 2)]  # 3 batches, accumulate 2: 2 + 1
    accumulated, steps = train_toy(batches, accumulate=2)
    by_hand, _ = train_toy([(images[:4], targets[:4]), (images[4:], targets[4:])], accumulate=1)
    assert steps == 2
    torch.testing.assert_close(accumulated.linear.weight, by_hand.linear.weight)


# ----------------------------------------------------------------------------------- parameter groups


def test_paramwise_puts_backbone_norm_and_bias_parameters_in_their_groups():
    from hydra.utils import instantiate

    cfg = compose_train(["model.backbone.weights=null"])
    model = instantiate(cfg.model, num_classes=10, _convert_="all")
    assert len(parameter_groups(model, 0.01, 0.05, cfg.schedule.paramwise)) == 1  # the defaults: as before
    groups = parameter_groups(model, 0.01, 0.05, {"backbone_lr_mult": 0.1, "norm_decay_mult": 0.0,
                                                  "bias_decay_mult": 0.0})
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert groups[0]["lr"] == 0.01 and groups[0]["weight_decay"] == 0.05  # the plain group first (logged lr)
    assert by_param[id(named["backbone.body.body.layer1.0.conv1.weight"])] == (pytest.approx(0.001), 0.05)
    assert by_param[id(named["backbone.body.body.layer1.0.bn1.weight"])] == (pytest.approx(0.001), 0.0)
    assert by_param[id(named["rpn.head.cls_logits.bias"])] == (0.01, 0.0)
    assert by_param[id(named["roi_heads.box_head.fc6.weight"])] == (0.01, 0.05)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------ runs a user looks at


def tiny_fit(root, run_dir, *overrides):
    from detect.engine.fit import fit

    cfg = compose_train([f"data.root={root}", *TINY, "runtime.max_iters_per_epoch=2", "runtime.plots.enabled=false",
                         *overrides])
    with open_dict(cfg):
        del cfg["hydra"]
    return fit(cfg, run_dir)


def test_early_stopping_ends_the_run_finished_with_the_reason(tiny_demo_root, tmp_path, caplog):
    caplog.set_level("INFO", logger="detect")
    # min_delta 1.0: no evaluation can improve on the first one by that much.
    tiny_fit(tiny_demo_root, tmp_path / "run", "schedule.epochs=5", "runtime.early_stopping.patience=2",
             "runtime.early_stopping.min_delta=1.0")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 3  # eval 1 sets the best, 2 and 3 do not
    assert "did not improve by more than 1 for 2 evaluation(s)" in summary["stopped_early"]
    assert "stopped after epoch 3 of 5" in summary["stopped_early"]
    assert "Early stopping: bbox_mAP_50 did not improve" in caplog.text


@pytest.mark.slow  # three tiny runs: about 35 s on 2 cores
def test_ema_run_evaluates_and_saves_the_average_and_a_resumed_run_ends_where_the_whole_run_ends(
        tiny_demo_root, tmp_path, caplog):
    """Extending a finished 1-epoch run to 2 epochs gives the 2-epoch run's weights and EMA exactly
    (the demo schedule's lr is the same on both plans), and every file says which weights were scored."""
    caplog.set_level("INFO", logger="detect")
    ema = ["schedule.ema.enable=true", "schedule.ema.warmup_iters=2"]
    tiny_fit(tiny_demo_root, tmp_path / "whole", *ema, "schedule.epochs=2")
    tiny_fit(tiny_demo_root, tmp_path / "part", *ema, "schedule.epochs=1")
    tiny_fit(tiny_demo_root, tmp_path / "part", *ema, "schedule.epochs=2", f"runtime.resume_from={tmp_path / 'part'}")
    whole, part = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "part")
    assert whole["weights"] == part["weights"] == "ema" and whole["ema_updates"] == part["ema_updates"] == 4
    for key in ("model", "raw_model"):
        for name, tensor in whole[key].items():
            torch.testing.assert_close(part[key][name], tensor, msg=f"{key} {name}")
    assert not all(torch.equal(whole["model"][k], whole["raw_model"][k]) for k in whole["model"])
    log = caplog.text
    assert "schedule.epochs 1 -> 2: the lr schedule is re-planned" in log
    assert "Evaluation after epoch 2 (EMA weights" in log
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["weights"] == "ema" and summary["epochs_done"] == 2 and summary["status"] == "finished"
    val = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
           if '"val"' in line]
    assert [r["weights"] for r in val] == ["ema", "ema"]
