"""Structured-config schemas of the closed config sections, checked by OmegaConf itself.

Each dataclass says the keys of one section, their types and their allowed values; composing a
config that gives a key of the wrong type (`schedule.lr=abc`), a value outside an Enum
(`mode=submit`), a key the section does not have (`+data.new_key=1`) or leaves a required one at
`???` fails with OmegaConf's error naming the key (detect/config/check.py turns it into one line).
The values themselves live in the yaml files (conf/), which name their schema first in their
defaults list, e.g. conf/data/coco.yaml:

    defaults:
      - /schema/data@_here_  # the keys and types of a data config (detect/config/schemas.py)
      - _self_

so a field without a default here (MISSING) must be set by the yaml. Open sections stay `Any`: the
model (any `_target_` builder's arguments), schedule.optimizer and schedule.lr_scheduler.

Closed choices are Enums whose members are plain strings to their readers (`StrChoice`): equal to
the string, printed and formatted as it, written as it to .hydra/config.yaml. Only for keys that
never go through `OmegaConf.to_container` into a checkpoint: to_container keeps the Enum member,
which `torch.load(weights_only=True)` refuses and yaml.safe_dump cannot write. runtime.progress
and runtime.monitor are therefore `str` fields whose values config_check checks.

Imports only dataclasses, enum, typing, omegaconf and hydra (no torch): `--help` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class StrChoice(str, Enum):
    """An Enum whose members are their string everywhere a reader looks: `==`, hash, str(),
    f-strings and format() give the value on every Python version (3.11 changed format() of
    mixed-in Enums to 'Class.member'; these two lines keep it the value)."""

    __str__ = str.__str__
    __format__ = str.__format__


class Mode(StrChoice):
    """detect.test's mode."""

    eval = "eval"
    predict = "predict"


class TtaMerge(StrChoice):
    """How detect.test fuses the boxes of its test-time augmentation views."""

    wbf = "wbf"
    nms = "nms"


class Split(StrChoice):
    """The split detect.browse draws."""

    train = "train"
    val = "val"


# Allowed values of the `str` fields config_check checks (see the module docstring for why not Enums).
PROGRESS_MODES = ("auto", "bar", "lines")
MONITOR_METRICS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")


# ------------------------------------------------------------------------------------- runtime
@dataclass
class PlotsSchema:
    enabled: bool = MISSING
    confusion_score_thr: float = MISSING
    confusion_iou_thr: float = MISSING


@dataclass
class ProfileSchema:
    enabled: bool = True
    warmup: int = 2
    repeats: int = 10


@dataclass
class WandbSchema:
    enabled: bool = MISSING
    mode: str | None = MISSING
    project: str = MISSING
    entity: str | None = MISSING
    log_checkpoint: bool = MISSING
    init_timeout: float = MISSING
    finish_timeout: float = MISSING


@dataclass
class EarlyStoppingSchema:
    patience: int | None = None
    min_delta: float = 0.0


@dataclass
class RuntimeSchema:
    """conf/runtime/default.yaml."""

    seed: int = MISSING
    deterministic: bool = MISSING
    device: str = MISSING
    amp: Any = MISSING  # false, true, fp16 or bf16: mixed types, checked by config_check
    channels_last: bool = MISSING
    cudnn_benchmark: bool = MISSING
    threads: int | None = MISSING
    compile: Any = False  # false, true or a torch.compile mode: mixed types, checked by config_check
    fused_optimizer: Any = "auto"  # auto, true or false: mixed types, checked by config_check
    workers: Any = "auto"  # auto or a number >= 0 (checked when the loaders are built)
    prefetch_factor: int = 2
    pin_memory: Any = MISSING  # auto, true or false: mixed types, checked by config_check
    persistent_workers: bool = MISSING
    eval_batch_size: Any = "auto"  # auto or a number >= 1 (checked when the loaders are built)
    group_by_aspect_ratio: bool = MISSING
    eval_interval: int = MISSING
    checkpoint_interval: int = MISSING
    max_keep_ckpts: int = MISSING
    monitor: str = MISSING  # one of MONITOR_METRICS (a str: it goes into checkpoints and file names)
    log_interval: int = MISSING
    progress: str = MISSING  # one of PROGRESS_MODES (a str: it goes into checkpoints)
    plots: PlotsSchema = field(default_factory=PlotsSchema)
    load_from: str | None = MISSING
    resume_from: str | None = MISSING
    skip_nonfinite: bool = MISSING
    max_iters_per_epoch: int | None = MISSING
    early_stopping: EarlyStoppingSchema = field(default_factory=EarlyStoppingSchema)
    profile: ProfileSchema = field(default_factory=ProfileSchema)
    wandb: WandbSchema = field(default_factory=WandbSchema)


# ---------------------------------------------------------------------------------------- data
@dataclass
class AugSchema:
    """conf/data/aug/*.yaml: the training augmentation pipeline (detect/data/pipeline.py)."""

    name: str = MISSING
    resizes: bool = MISSING  # the pipeline sizes training images: the detector does not resize them again
    min_box_size: float | None = MISSING  # the box rule's pixels; null: no box rule
    close_at_epoch: int | None = MISSING  # 1-based epoch from which mosaic/mixup are off
    transforms: list[Any] = MISSING  # `_target_` nodes: open (checked when the pipeline is built)


@dataclass
class SamplerSchema:
    """data.sampler (detect/data/samplers.py); defaults, so data configs written before it compose."""

    name: str = "uniform"  # one of SAMPLERS (checked by config_check)
    repeat_threshold: float = 0.1
    samples_per_epoch: int | None = None


@dataclass
class DataSchema:
    """conf/data/coco.yaml and every data config that starts from it."""

    name: str = MISSING
    root: str = MISSING
    root_env: str | None = MISSING
    train_ann: str = MISSING
    val_ann: str | None = MISSING
    test_ann: str | None = MISSING
    fold: int | None = MISSING
    fold_train_ann: str = MISSING
    fold_val_ann: str = MISSING
    classes: list[str] | None = MISSING
    train_keep_empty: bool = MISSING
    strict: bool = MISSING
    skip_bad_images: bool = MISSING
    min_size: int = MISSING
    max_size: int = MISSING
    mean: list[float] = MISSING
    std: list[float] = MISSING
    pad_divisor: int = MISSING
    pad_to: Any = None  # null, a side or [height, width]: checked by set_pad_to (detect/models/parts.py)
    hflip_prob: float = MISSING
    batch_size: int = MISSING
    sampler: SamplerSchema = field(default_factory=SamplerSchema)
    aug: AugSchema = field(default_factory=AugSchema)


@dataclass
class DemoParamsSchema:
    """data.demo: the demo generator's parameters (detect/data/demo.py)."""

    seed: int = MISSING
    num_train: int = MISSING
    num_val: int = MISSING
    min_px: int = MISSING
    max_px: int = MISSING


@dataclass
class DemoDataSchema(DataSchema):
    """conf/data/demo.yaml: a data config plus the generator's parameters."""

    demo: DemoParamsSchema = field(default_factory=DemoParamsSchema)


# ------------------------------------------------------------------------------------ schedule
@dataclass
class AutoScaleLrSchema:
    enable: bool = MISSING
    base_batch_size: int = MISSING


@dataclass
class ParamwiseSchema:
    backbone_lr_mult: float = 1.0
    norm_decay_mult: float = 1.0
    bias_decay_mult: float = 1.0


@dataclass
class EmaSchema:
    enable: bool = False
    decay: float = 0.9998
    warmup_iters: int = 2000


@dataclass
class ScheduleSchema:
    """conf/schedule/*.yaml. optimizer and lr_scheduler are `_target_` nodes: open."""

    name: str = MISSING
    epochs: int = MISSING
    lr: float = MISSING
    momentum: float | None = None  # SGD's; null for optimizers without it (the demo's AdamW)
    weight_decay: float = MISSING
    warmup_iters: int = MISSING
    warmup_ratio: float = MISSING
    milestones: list[int] = MISSING
    gamma: float = MISSING
    grad_clip: float | None = MISSING
    auto_scale_lr: AutoScaleLrSchema = field(default_factory=AutoScaleLrSchema)
    # Defaults, not MISSING: schedule files written before these keys still compose.
    accumulate: int = 1
    paramwise: ParamwiseSchema = field(default_factory=ParamwiseSchema)
    ema: EmaSchema = field(default_factory=EmaSchema)
    optimizer: Any = MISSING
    lr_scheduler: Any = MISSING


# ------------------------------------------------------------------------------- test / browse
@dataclass
class DetectTestDataSchema:
    """conf/test.yaml's data: changes to the run's data config (null keeps the run's value)."""

    root: str | None = MISSING
    val_ann: str | None = MISSING
    test_ann: str | None = MISSING
    fold: int | None = MISSING
    min_size: int | None = MISSING
    max_size: int | None = MISSING


@dataclass
class DetectTestSchema:
    """conf/test.yaml (python -m detect.test)."""

    run: str | None = MISSING
    checkpoint: str = MISSING
    mode: Mode = MISSING
    score_threshold: float = MISSING
    max_detections: int = MISSING
    tta: bool = MISSING
    tta_scales: list[int] | None = MISSING
    tta_flip: bool = MISSING
    tta_merge: TtaMerge = MISSING
    tta_iou_thr: float = MISSING
    device: str = MISSING
    workers: int = MISSING
    batch_size: int | None = MISSING
    amp: Any = None  # null (the run's runtime.amp), false, true, fp16 or bf16: checked by config_check
    data: DetectTestDataSchema = field(default_factory=DetectTestDataSchema)
    member: str = MISSING


@dataclass
class BrowseSchema:
    """conf/browse.yaml's own keys (the rest is conf/train.yaml's)."""

    num_images: int = MISSING
    split: Split = MISSING
    seed: int = MISSING
    out: str | None = MISSING
    grid_columns: int = MISSING


SCHEMAS = {
    "runtime": RuntimeSchema,
    "data": DataSchema,
    "data_demo": DemoDataSchema,
    "schedule": ScheduleSchema,
    "test": DetectTestSchema,
    "browse": BrowseSchema,
}
GROUP = "schema"  # conf/ names them /schema/<name>


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore as /schema/<name> (idempotent: storing again replaces)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group=GROUP, name=name, node=node)
