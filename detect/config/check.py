"""Check the command line of `python -m detect.train` / `detect.test` / `detect.browse` before Hydra starts a run.

Types, allowed values (Enums) and required values are the schemas' job (detect/config/schemas.py: OmegaConf
rejects `schedule.lr=abc` or `mode=submit` itself, naming the key). This module turns what OmegaConf
and Hydra report into one line that says how to fix it, and adds what a schema cannot say. What it
catches, with one message and exit status 2 (no traceback, no run directory):
- an unknown key in a plain `key=value` override (`schedule.lrr=0.1`): the message suggests the
  nearest key and lists the valid keys of the deepest section that exists;
- the same for the keys of a sweeper's search space (`hydra.sweeper.params`, e.g. hparams_search);
- a value the schema rejects (`schedule.lr=abc`, `data.batch_size=two`, `mode=submit`), every value
  of a `-m` sweep included, said with the range and an example from RULES below;
- a value of the right type out of its range (`schedule.epochs=0`, `data.hflip_prob=2`), and the
  choices a schema cannot type: str keys that go into checkpoints (runtime.progress, runtime.monitor)
  and keys of mixed types (runtime.amp: false/true/fp16/bf16);
- a required value left at `???` (`data.root` for data=coco);
- a value of the wrong type or an unknown key in a config file (an experiment, a member's option).

How: the config is composed with Hydra's compose API and the command line's own overrides (a
sweep contributes its first value), so the keys of the chosen group options (`model=cascade_rcnn`,
`experiment=...`) count. If that fails, it is composed again without the plain key overrides, and
each of them is looked up and applied to it as Hydra would (OmegaConf.update): every unknown key and
rejected value is named. If Hydra cannot compose the config for another reason (an unknown group
option, a bad `~key`, an unknown `hydra.*` key, a syntax error), Hydra's own words are the message,
with exit status 2 all the same (its "Config search path" lines left out). `+key=value` (add),
`++key`, `~key` (delete), `hydra.*` keys and group selections get no "did you mean" here. Open
sections (model, schedule.optimizer, schedule.lr_scheduler) take any key of their `_target_`: only
the keys they already have are known.

With `--cfg job|hydra|all` the same check runs, less the required values (printing a config that
still has a `???` is fine). It is skipped for `--help`, `--info`, shell completion and every other
flag. Cheap by design: imports hydra and omegaconf only (no torch); a composition costs about 0.2 s.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode

from detect.config import schemas
from detect.config.schemas import MONITOR_METRICS, PROGRESS_MODES

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
EXIT_CODE = 2  # a config error (detect/cli.py); errors found while the work runs exit with 1
_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """What the schema cannot say about a key: the range of its numbers (each element of a list),
    or the values it may take when they are of mixed types or must stay plain strings. The type
    itself comes from the schema (detect/config/schemas.py); `example` goes into the message."""

    low: float | None = None  # inclusive lower bound
    high: float | None = None  # inclusive upper bound
    above: float | None = None  # exclusive lower bound
    example: str = ""
    choices: tuple = ()
    words: tuple = ()  # strings accepted beside the numbers (auto); the schema's type is then Any
    noun: str = ""  # what the value must be, where the schema's type (Any) cannot say it

    def describe(self, noun: str) -> str:
        """'a whole number >= 1' from the schema's noun ('a whole number') and the range."""
        noun = self.noun or noun
        if self.choices:
            names = [_show(c) for c in self.choices]
            return "one of " + ", ".join(names[:-1]) + " or " + names[-1]
        return noun + self._bounds()

    def _bounds(self) -> str:
        if self.low is not None and self.high is not None:
            return f" in [{_num(self.low)}, {_num(self.high)}]"
        if self.above is not None and self.high is not None:
            return f" in ({_num(self.above)}, {_num(self.high)}]"
        if self.above is not None:
            return f" > {_num(self.above)}"
        if self.low is not None:
            return f" >= {_num(self.low)}"
        return ""

    def accepts(self, value: Any) -> bool:
        """Whether a value of the schema's type (None where the schema allows it) is in range."""
        if self.choices:
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.words and (isinstance(value, (bool, str)) or value is None):
            return value in self.words and isinstance(value, str)
        if value is None or isinstance(value, (bool, str)):
            return True
        if isinstance(value, (list, tuple)):
            return all(self.accepts(v) for v in value)
        if not math.isfinite(value):
            return False
        return not ((self.low is not None and value < self.low) or (self.high is not None and value > self.high)
                    or (self.above is not None and value <= self.above))


def _range(low=None, high=None, above=None, example="") -> Rule:
    return Rule(low=low, high=high, above=above, example=example)


def _choice(*choices, example="") -> Rule:
    return Rule(choices=choices, example=example)


def _auto_or_count(low: int, example: str) -> Rule:
    """auto or a whole number >= low (runtime.workers, runtime.eval_batch_size: Any in the schema)."""
    return Rule(low=low, words=("auto",), noun="auto or a whole number", example=example)


# Per entry point: ranges and choices the schemas cannot say (their types are the schemas'). A key
# that the composed config lacks is skipped (an older config).
RULES: dict[str, dict[str, Rule]] = {
    "train": {
        "schedule.epochs": _range(low=1, example="12"),
        "schedule.lr": _range(above=0, example="0.005"),
        "schedule.momentum": _range(low=0, high=1, example="0.9"),
        "schedule.weight_decay": _range(low=0, example="0.0001"),
        "schedule.warmup_iters": _range(low=0, example="500"),
        "schedule.warmup_ratio": _range(above=0, high=1, example="0.001"),  # torch's LinearLR cannot start at 0
        "schedule.milestones": _range(low=1, example="[8,11]"),
        "schedule.gamma": _range(above=0, example="0.1"),
        "schedule.grad_clip": _range(above=0, example="10"),
        "schedule.auto_scale_lr.base_batch_size": _range(low=1, example="16"),
        "schedule.accumulate": _range(low=1, example="2"),
        "schedule.paramwise.backbone_lr_mult": _range(low=0, example="0.1"),
        "schedule.paramwise.norm_decay_mult": _range(low=0, example="0"),
        "schedule.paramwise.bias_decay_mult": _range(low=0, example="0"),
        "schedule.ema.decay": _range(above=0, high=1, example="0.9998"),
        "schedule.ema.warmup_iters": _range(low=0, example="2000"),
        "runtime.early_stopping.patience": _range(low=1, example="5"),
        "runtime.early_stopping.min_delta": _range(low=0, example="0.002"),
        "data.batch_size": _range(low=1, example="4"),
        "data.sampler.name": _choice("uniform", "repeat_factor", "class_aware", example="repeat_factor"),
        "data.sampler.repeat_threshold": _range(above=0, high=1, example="0.1"),
        "data.sampler.samples_per_epoch": _range(low=1, example="2000"),
        "data.min_size": _range(low=1, example="800"),
        "data.max_size": _range(low=1, example="1333"),
        "data.fold": _range(low=0, example="0"),
        "data.hflip_prob": _range(low=0, high=1, example="0.5"),
        "data.pad_divisor": _range(low=1, example="32"),
        "data.aug.min_box_size": _range(low=0, example="1"),
        "data.aug.close_at_epoch": _range(low=1, example="12"),  # 1-based, as the log counts epochs
        "runtime.seed": _range(low=0, high=2**32 - 1, example="42"),
        "runtime.amp": _choice(False, True, "fp16", "bf16", example="bf16"),  # mixed types: Any in the schema
        "runtime.threads": _range(low=1, example="4"),
        "runtime.workers": _auto_or_count(0, example="8"),
        "runtime.prefetch_factor": _range(low=1, example="4"),
        "runtime.eval_batch_size": _auto_or_count(1, example="8"),
        "runtime.compile": _choice(False, True, "default", "reduce-overhead", "max-autotune",
                                   "max-autotune-no-cudagraphs", example="true"),  # mixed types: Any in the schema
        "runtime.fused_optimizer": _choice("auto", True, False, example="auto"),  # mixed types: Any in the schema
        "runtime.pin_memory": _choice("auto", True, False, example="auto"),  # mixed types: Any in the schema
        # The trainer checks these again (a call that did not come through check_cli).
        "runtime.eval_interval": _range(low=1, example="1"),
        "runtime.checkpoint_interval": _range(low=1, example="1"),
        "runtime.log_interval": _range(low=1, example="20"),
        "runtime.max_keep_ckpts": _range(low=-1, example="3"),  # -1 keeps every epoch_N.pth
        # Plain strings in the schema (they go into checkpoints, see detect/config/schemas.py): choices here.
        "runtime.progress": _choice(*PROGRESS_MODES, example="lines"),
        "runtime.monitor": _choice(*MONITOR_METRICS, example="bbox_mAP"),
        "runtime.plots.confusion_score_thr": _range(low=0, high=1, example="0.25"),
        "runtime.plots.confusion_iou_thr": _range(above=0, high=1, example="0.5"),
        "runtime.max_iters_per_epoch": _range(low=1, example="50"),
    },
    # detect.test checks score_threshold, max_detections and tta_iou_thr again before it loads a checkpoint.
    "test": {
        "score_threshold": _range(low=0, high=1, example="0.05"),
        "max_detections": _range(low=1, example="100"),
        "tta_iou_thr": _range(above=0, high=1, example="0.55"),
        "workers": _range(low=0, example="2"),
        "batch_size": _range(low=1, example="4"),
        "amp": _choice(None, False, True, "fp16", "bf16", example="bf16"),  # mixed types: Any in the schema
        "data.fold": _range(low=0, example="0"),
        "data.min_size": _range(low=1, example="800"),
        "data.max_size": _range(low=1, example="1333"),
    },
}
# detect.browse composes the training config (conf/browse.yaml starts from train.yaml) and adds its
# own keys; detect.browse checks these again when it runs (a call that did not come through check_cli).
BROWSE_RULES: dict[str, Rule] = {
    "num_images": _range(low=1, example="16"),
    "seed": _range(low=0, high=2**32 - 1, example="0"),
    "grid_columns": _range(low=1, example="4"),
}
RULES["browse"] = {**RULES["train"], **BROWSE_RULES}

# Examples for required (`???`) values.
REQUIRED_EXAMPLES = {"data.root": "/path/to/dataset"}

# The only flags the check runs with; any other (--help, --info, shell completion, --config-dir)
# makes it stand aside and leaves the command line to Hydra. The value is the number of arguments.
_RUN_FLAGS = {"-m": 0, "--multirun": 0, "--cfg": 1, "-c": 1, "--package": 1, "-p": 1, "--resolve": 0}
_PRINT_FLAGS = {"--cfg", "-c"}


def check_cli(argv: Sequence[str], config_name: str, config_dir: Path = CONF_DIR) -> None:
    """Print the problems of this command line and exit with status 2, or return if there are none.
    Also registers the schemas the conf/ files name, for the Hydra run that follows."""
    from detect.config.schemas import register_schemas

    register_schemas()
    problems = find_problems(argv, config_name, config_dir)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(EXIT_CODE)


def _split_flags(argv: Sequence[str]) -> tuple[list[str], set[str]] | None:
    """(overrides, flags) of a command line the check applies to; None if another flag is there."""
    overrides, flags, args = [], set(), list(argv)
    while args:
        arg = args.pop(0)
        if arg in _RUN_FLAGS:
            flags.add(arg)
            del args[:_RUN_FLAGS[arg]]
        elif arg.startswith("-"):
            return None
        else:
            overrides.append(arg)
    return overrides, flags


def find_problems(argv: Sequence[str], config_name: str, config_dir: Path = CONF_DIR) -> list[str]:
    """The problems of a command line (`sys.argv[1:]`), as user-facing messages; [] when it is fine
    or when the check does not apply (flags such as --help, or a config Hydra cannot compose)."""
    split = _split_flags(argv)
    if split is None or not split[0]:
        return []
    overrides, flags = split
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from detect.config import register_resolvers
    from detect.config.schemas import register_schemas

    register_resolvers()
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name=config_name):
        loader = GlobalHydra.instance().config_loader()
        try:
            parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)
        except Exception as err:  # a syntax error: Hydra's own message is the right one (exit 2 all the same)
            return [m] if (m := hydra_error_message(err)) else []
        top_groups = set(loader.list_groups(""))
        # Each override as composed for the first job of a sweep (None: a sweep with no first value,
        # an Optuna interval: the config's own value stands in), in command-line order.
        items = []  # (override, text to compose, is a plain key=value)
        for override in parsed:
            key = override.key_or_group
            is_plain = (not override.is_delete() and not override.is_add() and not override.is_force_add()
                        and not override.is_hydra_override() and override.package is None
                        and "/" not in key and key not in top_groups)
            items.append((override, _first_value_override(override), is_plain))
        plain = [o for o, _, is_plain in items if is_plain]

        def composed(with_plain: bool) -> DictConfig | Exception:
            texts = [t for _, t, is_plain in items if t is not None and (with_plain or not is_plain)]
            try:
                return compose(config_name=config_name, overrides=texts, return_hydra_config=True)
            except Exception as err:  # whatever it is, Hydra reports it when it runs (or we say it below)
                return err

        cfg = composed(with_plain=True)
        if isinstance(cfg, Exception):  # an unknown key or a value the schema rejects: find which
            base = composed(with_plain=False)
            if isinstance(base, Exception):  # a config file itself is wrong, or an option that does not exist
                return [m] if (m := config_file_message(base) or hydra_error_message(base)) else []
            return override_problems(base, plain, RULES.get(config_name, {}))
        unsettable = [o for o, t, is_plain in items if is_plain and t is None]
        problems = [m for o in unsettable if (m := unknown_key_message(cfg, o.key_or_group))]
        problems += sweeper_param_problems(cfg, top_groups)
        if problems:
            return problems
        problems += value_problems(cfg, RULES.get(config_name, {}), plain)
        if not flags & _PRINT_FLAGS:  # --cfg job may print a config that still needs a value
            problems += missing_value_problems(cfg)
        return list(dict.fromkeys(problems))


def _first_value_override(override) -> str | None:
    """The override as Hydra would compose it for the first job of a sweep; None for a sweep that
    has no first value (an interval for Optuna): the config's own value stands in."""
    if not override.is_sweep_override():
        return override.input_line
    if not override.is_discrete_sweep():
        return None
    try:
        first = next(iter(override.sweep_string_iterator()))
    except Exception:  # an empty or unusual sweep: let Hydra judge it
        return None
    return f"{override.get_key_element()}={first}"


def _values(override) -> list[Any]:
    """The values an override sets: its value, or each value of a discrete sweep ([] for an
    interval or anything else a sweeper picks while it runs)."""
    try:
        if not override.is_sweep_override():
            return [_plain(override.value())]
        if override.is_discrete_sweep():
            return [_plain(v) for v in override.sweep_iterator()]
    except Exception:  # a glob or such: Hydra reports it
        pass
    return []


# ------------------------------------------------------------------------------------------ keys
def _children(node: Any) -> list[str]:
    if isinstance(node, DictConfig):
        return [str(k) for k in node.keys()]
    if isinstance(node, ListConfig):
        return [str(i) for i in range(len(node))]
    return []


def _child(node: Any, key: str) -> Any:
    """The child node, unresolved (a `???` or an interpolation stays what it is); _ABSENT if none."""
    if key not in _children(node):
        return _ABSENT
    return node._get_node(int(key) if isinstance(node, ListConfig) else key)


def _select_node(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = _child(node, part)
        if node is _ABSENT:
            return _ABSENT
    return node


def _job_keys(cfg: DictConfig) -> list[str]:
    """Every dotted key of the job config (the hydra node left out), sections and values alike."""
    out: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, DictConfig):
            return
        for key in _children(node):
            if not prefix and key == "hydra":
                continue
            path = f"{prefix}{key}"
            out.append(path)
            walk(node._get_node(key), path + ".")

    walk(cfg, "")
    return out


def _corrected(cfg: DictConfig, parts: list[str]) -> str | None:
    """The key with each unknown part replaced by its closest sibling, if that key exists."""
    node: Any = cfg
    out = []
    for part in parts:
        names = [n for n in _children(node) if node is not cfg or n != "hydra"]
        if part not in names:
            close = difflib.get_close_matches(part, names, n=1)
            if not close:
                return None
            part = close[0]
        out.append(part)
        node = _child(node, part)
    return ".".join(out)


def _choices_label(cfg: DictConfig, parts: list[str]) -> str:
    """'schedule=1x' or 'model=cascade_rcnn, model/neck=fpn': the group options the section comes from."""
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    if choices is None:
        return ""
    labels = []
    for i in range(1, len(parts) + 1):
        group = "/".join(parts[:i])
        option = choices.get(group)
        if option is not None:
            labels.append(f"{group}={option}")
    return ", ".join(labels)


def unknown_key_message(cfg: DictConfig, key: str, where: str = "") -> str | None:
    """None if `key` exists in `cfg`; else the message: nearest key, valid keys of the deepest section."""
    parts = key.split(".")
    node: Any = cfg
    depth = 0
    for part in parts:
        child = _child(node, part) if (node is not cfg or part != "hydra") else _ABSENT
        if child is _ABSENT:
            break
        node, depth = child, depth + 1
    else:
        return None
    parent = ".".join(parts[:depth])
    label = _choices_label(cfg, parts[:depth])
    origin = f" ({where})" if where else (f" (in {label})" if label else "")
    text = f"Unknown config key '{key}'{origin}."
    if depth and not isinstance(node, (DictConfig, ListConfig)):
        shown = _show(OmegaConf.select(cfg, parent, throw_on_resolution_failure=False))
        return f"{text} {parent} is a value ({shown}), not a section: set it with {parent}=<value>."

    suggestion = _corrected(cfg, parts)
    if suggestion is None:  # the right name in another section: schedule.batch_size -> data.batch_size
        last = parts[-1]
        names = {k: k.rsplit(".", 1)[-1] for k in _job_keys(cfg)}
        near = set(difflib.get_close_matches(last, set(names.values()), n=2, cutoff=0.8))
        found = [k for k, name in names.items() if name in near][:3]
        suggestion = " or ".join(f"'{k}'" for k in found) if found else None
    else:
        suggestion = f"'{suggestion}'"
    if suggestion:
        text += f" Did you mean {suggestion}?"
    if isinstance(node, ListConfig):
        return text + f" {parent} is a list of {len(node)} values."
    names = sorted(n for n in _children(node) if depth or n != "hydra")
    text += (f" Valid keys of {parent}: " if depth else " Valid top-level keys: ") + ", ".join(names) + "."
    target = OmegaConf.select(cfg, f"{parent}._target_", default=None, throw_on_resolution_failure=False)
    if depth and target is not None:  # the section is a builder's arguments: the config need not list them all
        text += (f" {parent} is passed to {target}: an argument the config does not list is added with "
                 f"+{key}=<value>.")
    return text


def sweeper_param_problems(cfg: DictConfig, top_groups: Iterable[str]) -> list[str]:
    """Unknown keys in the sweeper's search space (hydra.sweeper.params), e.g. of hparams_search=..."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None)
    if not isinstance(params, DictConfig):
        return []
    search = OmegaConf.select(cfg, "hydra.runtime.choices.hparams_search", default=None)
    where = "in hydra.sweeper.params" + (f" of hparams_search={search}" if search else "")
    groups = set(top_groups)
    problems = []
    for key in params.keys():
        key = str(key)
        if key.startswith(("+", "~", "hydra.", "hydra/")) or "/" in key or "@" in key or key in groups:
            continue
        if message := unknown_key_message(cfg, key, where=where):
            problems.append(message)
    return problems


# ---------------------------------------------------------------------------------------- values
def value_problems(cfg: DictConfig, rules: dict[str, Rule], plain_overrides: list) -> list[str]:
    """Values out of range: the composed value of each key in `rules`; and every value of a `-m`
    sweep over a plain key that its schema type or its rule rejects."""
    problems = []
    typed = {o.key_or_group: v[0] for o in plain_overrides  # a value as the user typed it (2, not 2.0)
             if not o.is_sweep_override() and len(v := _values(o)) == 1}
    for key, rule in rules.items():
        node = _select_node(cfg, key)
        if node is _ABSENT or node._is_missing():  # a config without it, or `???` (reported as required)
            continue
        try:
            value = OmegaConf.select(cfg, key)
        except Exception:  # an interpolation that cannot resolve yet: not ours to judge
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        if not rule.accepts(value):
            problems.append(_value_message(cfg, key, typed.get(key, value), rule))
    for override in plain_overrides:
        if override.is_discrete_sweep():
            key = override.key_or_group
            problems += [m for v in _values(override) if (m := value_problem(cfg, key, v, rules.get(key)))]
    return problems


def override_problems(base: DictConfig, plain_overrides: list, rules: dict[str, Rule]) -> list[str]:
    """Why the plain `key=value` overrides cannot be applied to `base` (the config composed without
    them): unknown keys, and values their schema type or rule rejects, each value of a sweep included."""
    problems = []
    for override in plain_overrides:
        key = override.key_or_group
        if message := unknown_key_message(base, key):
            problems.append(message)
            continue
        problems += [m for v in _values(override) if (m := value_problem(base, key, v, rules.get(key)))]
    return list(dict.fromkeys(problems))


def value_problem(cfg: DictConfig, key: str, value: Any, rule: Rule | None = None) -> str | None:
    """The message for `key=value` (a value as the command line gives it) if the schema or the rule
    rejects it; None if it is fine, an interpolation, or `key` is not a value of `cfg`."""
    if isinstance(value, str) and "${" in value:
        return None
    parent_key, _, name = key.rpartition(".")
    parent = _select_node(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or name not in parent:
        return None
    trial = copy.deepcopy(parent)  # keeps its schema and its place in cfg (struct flags)
    try:
        OmegaConf.update(trial, name, value, merge=True)  # as Hydra applies an override
        node = trial._get_node(name)
        converted = OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else node._value()
    except OmegaConfBaseException:  # the schema's type or Enum rejects it
        return _value_message(cfg, key, value, rule)
    if rule is not None and not (isinstance(converted, str) and "${" in converted) and not rule.accepts(converted):
        return _value_message(cfg, key, value, rule)
    return None


def _plain(value: Any) -> Any:
    from hydra.core.override_parser.types import QuotedString

    if isinstance(value, QuotedString):
        return value.text
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _value_message(cfg: DictConfig, key: str, value: Any, rule: Rule | None) -> str:
    """'schedule.lr='abc' must be a number > 0 (e.g. schedule.lr=0.005).': the type from the schema
    (the node of `key` in `cfg`), range and example from the rule."""
    noun, optional, example = _expected(_select_node(cfg, key))
    text = rule.describe(noun) if rule is not None else noun
    if optional and not (rule is not None and (rule.choices or rule.noun)):
        text += " or null"
    example = rule.example if rule is not None and rule.example else example
    return f"{key}={_show(value)} must be {text}" + (f" (e.g. {key}={example})" if example else "") + "."


_NOUNS = {IntegerNode: "a whole number", FloatNode: "a number", BooleanNode: "true or false", StringNode: "a string"}
_PLURALS = {int: "whole numbers", float: "numbers", bool: "true/false values", str: "strings"}


def _expected(node: Any) -> tuple[str, bool, str]:
    """(what a value of this schema node must be, whether null is allowed, an example or '')."""
    if node is _ABSENT:
        return "a valid value", False, ""
    optional = node._is_optional()
    if isinstance(node, ListConfig):
        return f"a list of {_PLURALS.get(node._metadata.element_type, 'values')}", optional, ""
    if isinstance(node, DictConfig):
        keys = _children(node)
        return (f"a section (set its keys: {', '.join(keys)})" if keys else "a section"), optional, ""
    if isinstance(node, EnumNode):
        names = [_show(m.value) for m in node.enum_type]
        return "one of " + ", ".join(names[:-1]) + " or " + names[-1], optional, ""
    noun = next((text for kind, text in _NOUNS.items() if isinstance(node, kind)), "a valid value")
    current = None if node._is_missing() or node._is_interpolation() else node._value()
    example = "" if current is None else (_show(current) if not isinstance(current, str) else current)
    return noun, optional, example


def config_file_message(err: Exception) -> str | None:
    """One line for a config file (an experiment, a member's option) that its schema rejects, from
    Hydra's "In 'experiment/x': ValidationError raised while composing config: ..." (None for any
    other error: Hydra says those)."""
    match = re.match(r"In '([^']+)': (\w+) raised while composing config:\n(.*)", str(err), re.S)
    if not match or match.group(2) not in ("ValidationError", "ConfigKeyError", "ConfigAttributeError",
                                            "ConfigTypeError", "KeyValidationError"):
        return None
    where, kind, details = match.groups()
    lines = [line.strip() for line in details.splitlines() if line.strip()]
    full_key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), "?")
    origin = f"conf/{where}.yaml"
    unknown = re.match(r"Key '([^']+)' not in '(\w+)'", lines[0] if lines else "")
    if kind in ("ConfigKeyError", "ConfigAttributeError") and unknown:
        schema = getattr(schemas, unknown.group(2), None)
        names = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
        close = difflib.get_close_matches(unknown.group(1), names, n=1)
        section = full_key.rpartition(".")[0]
        prefix = f"{section}." if section else ""
        return (f"Unknown config key '{full_key}' in {origin}."
                + (f" Did you mean '{prefix}{close[0]}'?" if close else "")
                + (f" Valid keys of {section or 'the top level'}: {', '.join(sorted(names))}." if names else ""))
    return f"{origin} sets {full_key} to a value its schema rejects: {lines[0] if lines else kind}."


def hydra_error_message(err: Exception) -> str | None:
    """Hydra's own words for a command line it cannot use: a group option that does not exist
    (`model=cascade_rcnnn`, with the available options), an override of a key that is not there
    (`hydra.run.dirr=x`), a bad deletion, a syntax error. Said here so that it exits 2 before any run
    dir like every other config error; None for anything else (Hydra reports it when it runs)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    if not isinstance(err, (ConfigCompositionException, MissingConfigException, OverrideParseException)):
        return None
    text = str(err).split("\nConfig search path:")[0].rstrip()  # the search path only helps Hydra's developers
    missing = re.search(r"Could not find '((experiment|hparams_search)/[^']*)'", text)
    return _missing_file_message(missing.group(2), missing.group(1)) if missing else text


def _missing_file_message(group: str, path: str) -> str:
    """`experiment=member_a/typo`: name the file that is missing and list what the member has."""
    option = path.partition("/")[2]
    folder = CONF_DIR / group
    member = option.split("/")[0]
    member = member if (folder / member).is_dir() else ""
    where = folder / member if member else folder
    have = sorted(str(f.relative_to(folder).with_suffix("")) for f in where.rglob("*.yaml"))
    hint = (" (python -m detect.new_experiment member=<you> name=<name> writes one)" if group == "experiment" else "")
    return (f"{group}={option}: conf/{path}.yaml does not exist. "
            f"{'Options of ' + member if member else 'Options'}: {', '.join(have) or '(none)'}{hint}.")


def missing_value_problems(cfg: DictConfig) -> list[str]:
    """Required values (`???`) that nothing set."""
    problems = []
    for key in _job_keys(cfg):
        parent, _, name = key.rpartition(".")
        node = _select_node(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, name):
            label = _choices_label(cfg, key.split(".")[:-1])
            problems.append(f"{key} is required{f' for {label}' if label else ''}: pass "
                            f"{key}={REQUIRED_EXAMPLES.get(key, '<value>')}.")
    return problems


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _show(value: Any) -> str:
    """A value as the user would type it: 'abc' quoted, null, true/false, [8, 11]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)
