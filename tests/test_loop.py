"""The training loop and its hooks (detect/engine/loop.py): events in order, a failing hook gives
one message, non-finite losses stop or are skipped; and the same with the real hooks through fit()."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from detect.engine.build import Components
from detect.engine.distributed import SINGLE_PROCESS
from detect.engine.hooks import EVENTS, Hook
from detect.engine.loop import Trainer
from detect.errors import HookError, NonFiniteLossError
from detect.run import RunDir
from detect.run.checkpoints import CheckpointManager
from tests.conftest import TINY, compose_train


class ListLoader:
    """A loader of `n` one-image batches with what the loop asks of the real one (a generator, a
    batch sampler that can skip done batches)."""

    def __init__(self, n: int):
        self.n = n
        self.generator = torch.Generator()
        self.batch_sampler = self
        self.start = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.start = start_batch

    def __iter__(self):
        return iter([([torch.zeros(3, 4, 4)], [{"boxes": torch.zeros(0, 4)}])] * (self.n - self.start))

    def __len__(self) -> int:
        return self.n


class LossModel(torch.nn.Module):
    """A stand-in detector whose loss is NaN on the given calls (0-based)."""

    def __init__(self, bad_calls=()):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.bad_calls, self.calls = set(bad_calls), 0

    def forward(self, images, targets):
        self.calls += 1
        value = self.w * (float("nan") if self.calls - 1 in self.bad_calls else 1.0)
        return {"loss_a": value.sum(), "loss_b": self.w.sum()}


def make_trainer(tmp_path, model=None, hooks=(), epochs=2, steps=3, skip_nonfinite=False) -> Trainer:
    model = model or LossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    parts = Components(place=SINGLE_PROCESS, device=torch.device("cpu"), train_set=None, val_set=None,
                       train_loader=ListLoader(steps), val_loader=None, iters_per_epoch=steps, model=model,
                       train_model=model, optimizer=optimizer,
                       scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0), scaler=None,
                       amp_dtype=None)
    cfg = OmegaConf.create({"schedule": {"epochs": epochs, "grad_clip": None},
                            "runtime": {"seed": 0, "skip_nonfinite": skip_nonfinite}})
    run = RunDir(tmp_path)
    return Trainer(cfg, parts, run, CheckpointManager(run, "bbox_mAP_50", 3, enabled=False), list(hooks))


class Recorder(Hook):
    """Writes down every event it sees, with the loop's position."""

    def __init__(self):
        self.seen = []
        for event in EVENTS:
            setattr(self, event, self._recorder(event))

    def _recorder(self, event):
        def record(trainer, *args):
            self.seen.append((event, trainer.state.epoch, trainer.state.step))
        return record


def test_a_hook_sees_every_event_in_order(tmp_path):
    recorder = Recorder()
    make_trainer(tmp_path, hooks=[recorder], epochs=2, steps=2).train()
    assert recorder.seen == [
        ("before_train", 0, 0),
        ("before_epoch", 0, 0), ("after_step", 0, 1), ("after_step", 0, 2), ("after_epoch", 1, 0),
        ("before_epoch", 1, 0), ("after_step", 1, 1), ("after_step", 1, 2), ("after_epoch", 2, 0),
        ("after_train", 2, 0), ("on_close", 2, 0)]


def test_hooks_are_called_in_list_order_and_a_new_hook_needs_no_change_to_the_loop(tmp_path):
    order = []

    class Named(Hook):
        def __init__(self, name):
            self.name = name

        def after_epoch(self, trainer):
            order.append(self.name)

    make_trainer(tmp_path, hooks=[Named("a"), Named("b"), Named("c")], epochs=1).train()
    assert order == ["a", "b", "c"]


def test_a_failing_hook_gives_one_message_naming_it_and_the_others_still_close(tmp_path):
    class Broken(Hook):
        def after_epoch(self, trainer):
            raise ValueError("boom")

    recorder = Recorder()
    with pytest.raises(HookError) as info:
        make_trainer(tmp_path, hooks=[Broken(), recorder]).train()
    assert str(info.value) == "The Broken failed at after_epoch: ValueError: boom"
    assert [e for e, *_ in recorder.seen][-2:] == ["on_failure", "on_close"]


def test_a_non_finite_loss_stops_with_its_terms_named_or_is_skipped_and_counted(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"iteration 1 \(epoch 1, step 2\): \{'loss_a': nan\}"):
        make_trainer(tmp_path, LossModel({1}), epochs=1, steps=4).train()
    trainer = make_trainer(tmp_path, LossModel({1, 2}), epochs=1, steps=4, skip_nonfinite=True)
    trainer.train()
    assert (trainer.state.iteration, trainer.state.epoch, trainer.state.nonfinite_skipped) == (2, 1, 2)


def test_the_real_hooks_fire_evaluation_and_log_events_in_a_tiny_run(tiny_demo_root, tmp_path):
    from detect.engine.fit import fit

    cfg = compose_train([f"data.root={tiny_demo_root}", *TINY, "runtime.max_iters_per_epoch=2", "schedule.epochs=1",
                         "runtime.log_interval=1"])
    with open_dict(cfg):
        del cfg["hydra"]
    recorder = Recorder()
    best = fit(cfg, tmp_path / "run", extra_hooks=[recorder])
    events = [e for e, *_ in recorder.seen]
    steps = events.count("after_step")
    # Nested events come first to a hook late in the list: the metrics hook fires after_log inside
    # after_step, the evaluation hook fires after_evaluation inside after_epoch.
    assert steps >= 1 and events == ["before_train", "before_epoch", *["after_log", "after_step"] * steps,
                                     "after_evaluation", "after_epoch", "after_train", "on_close"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["best_score"] == best
