"""Check the command line of `python -m detect.train` / `detect.test` / `detect.browse` before Hydra starts a run.

What it catches, with one message and exit status 2 (no traceback, no run directory):
- an unknown key in a plain `key=value` override (`schedule.lrr=0.1`): the message suggests the
  nearest key and lists the valid keys of the deepest section that exists;
- the same for the keys of a sweeper's search space (`hydra.sweeper.params`, e.g. hparams_search);
- a value of the wrong type or out of range for the keys users set most (`schedule.lr=abc`,
  `schedule.epochs=0`, `data.batch_size=two`), every value of a `-m` sweep included;
- a required value left at `???` (`data.root` for data=coco).

How: the config is composed with Hydra's compose API and the command line's own overrides (a
sweep contributes its first value), so the keys of the chosen group options (`model=cascade_rcnn`,
`experiment=...`) count. If that fails, it is composed again without the plain key overrides, and
each of them is looked up. If Hydra cannot compose the config for any other reason (an unknown group
option, a bad `+key`/`~key`, a syntax error), nothing is reported here: Hydra runs and says it in its
own words. `+key=value` (add), `++key`, `~key` (delete), `hydra.*` keys and group selections are
not checked here.

Why a table and not structured-config schemas: the config tree is open. A model section takes any
keyword argument of its `_target_`, a member's config may add keys, and an optimizer may be swapped
for one with other arguments; a dataclass schema would have to list all of them or give up on
checking. So unknown keys are found against the composed tree itself, and types against the small
table below (key -> type, range, example), which names only keys whose meaning is fixed. Ranges the
trainer checks itself before it builds anything (runtime.*_interval, runtime.monitor) and the options
detect.test checks before it loads a checkpoint stay there; this module catches the types that would
otherwise crash with a traceback.

Cheap by design: imports hydra and omegaconf only (no torch); a composition costs about 0.2 s. It
is skipped for `--help`, `--cfg`, `--info`, shell completion and every other flag but `-m`.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
EXIT_CODE = 2  # a usage error, as argparse's; errors found while running exit with 1
_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """What a key's value must be. kind: int | number | bool | int_list | choice."""

    kind: str
    low: float | None = None  # inclusive lower bound
    high: float | None = None  # inclusive upper bound
    above: float | None = None  # exclusive lower bound
    nullable: bool = False
    example: str = ""
    choices: tuple = ()
    check_range: bool = True  # False: only the type is checked here, the range where it is used

    def describe(self) -> str:
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            names = [_show(c) for c in self.choices]
            text = "one of " + ", ".join(names[:-1]) + " or " + names[-1]
        else:
            noun = {"int": "a whole number", "number": "a number", "int_list": "a list of whole numbers"}[self.kind]
            text = noun + self._bounds()
        return text + (" or null" if self.nullable else "")

    def _bounds(self) -> str:
        if self.low is not None and self.high is not None:
            return f" in [{_num(self.low)}, {_num(self.high)}]"
        if self.above is not None:
            return f" > {_num(self.above)}"
        if self.low is not None:
            return f" >= {_num(self.low)}"
        return ""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.kind == "int_list":
            return isinstance(value, (list, tuple)) and all(self._number_ok(v, whole=True) for v in value)
        return self._number_ok(value, whole=self.kind == "int")

    def _number_ok(self, value: Any, whole: bool) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if not self.check_range:
            return True
        return not ((self.low is not None and value < self.low) or (self.high is not None and value > self.high)
                    or (self.above is not None and value <= self.above))


def _int(low=None, high=None, nullable=False, example="", check_range=True) -> Rule:
    return Rule("int", low=low, high=high, nullable=nullable, example=example, check_range=check_range)


def _number(low=None, high=None, above=None, nullable=False, example="") -> Rule:
    return Rule("number", low=low, high=high, above=above, nullable=nullable, example=example)


BOOL = Rule("bool", example="true")

# The keys users set most, per entry point. A key that the composed config lacks is skipped (a
# schedule without momentum, an older config).
RULES: dict[str, dict[str, Rule]] = {
    "train": {
        "schedule.epochs": _int(low=1, example="12"),
        "schedule.lr": _number(above=0, example="0.005"),
        "schedule.momentum": _number(low=0, high=1, example="0.9"),
        "schedule.weight_decay": _number(low=0, example="0.0001"),
        "schedule.warmup_iters": _int(low=0, example="500"),
        "schedule.warmup_ratio": _number(low=0, high=1, example="0.001"),
        "schedule.milestones": Rule("int_list", low=1, example="[8,11]"),
        "schedule.gamma": _number(above=0, example="0.1"),
        "schedule.grad_clip": _number(above=0, nullable=True, example="10"),
        "data.batch_size": _int(low=1, example="4"),
        "data.min_size": _int(low=1, example="800"),
        "data.max_size": _int(low=1, example="1333"),
        "data.fold": _int(low=0, nullable=True, example="0"),
        "data.hflip_prob": _number(low=0, high=1, example="0.5"),
        "data.pad_divisor": _int(low=1, example="32"),
        "data.train_keep_empty": BOOL,
        "data.strict": BOOL,
        "data.skip_bad_images": BOOL,
        "runtime.seed": _int(low=0, high=2**32 - 1, example="42"),
        "runtime.deterministic": BOOL,
        "runtime.amp": Rule("choice", choices=(False, True, "fp16", "bf16"), example="bf16"),
        "runtime.channels_last": BOOL,
        "runtime.cudnn_benchmark": BOOL,
        "runtime.persistent_workers": BOOL,
        "runtime.group_by_aspect_ratio": BOOL,
        "schedule.auto_scale_lr.enable": BOOL,
        "schedule.auto_scale_lr.base_batch_size": _int(low=1, example="16"),
        "runtime.threads": _int(low=1, nullable=True, example="4"),
        "runtime.workers": _int(low=0, example="2"),
        "runtime.pin_memory": Rule("choice", choices=("auto", True, False), example="auto"),
        # The trainer checks the range of these (before building anything), so here only the type.
        "runtime.eval_interval": _int(low=1, example="1", check_range=False),
        "runtime.checkpoint_interval": _int(low=1, example="1", check_range=False),
        "runtime.log_interval": _int(low=1, example="20", check_range=False),
        "runtime.max_keep_ckpts": _int(low=-1, example="3"),  # -1 keeps every epoch_N.pth
        "runtime.skip_nonfinite": BOOL,
        "runtime.progress": Rule("choice", choices=("auto", "bar", "lines"), example="lines"),
        "runtime.plots.enabled": BOOL,
        "runtime.plots.confusion_score_thr": _number(low=0, high=1, example="0.25"),
        "runtime.plots.confusion_iou_thr": _number(above=0, high=1, example="0.5"),
        "runtime.max_iters_per_epoch": _int(low=1, nullable=True, example="50"),
        "runtime.wandb.enabled": BOOL,
        "runtime.wandb.log_checkpoint": BOOL,
    },
    # detect.test checks mode, score_threshold, max_detections and the tta_* values itself, before
    # it loads a checkpoint; these are the ones it passes on unchecked.
    "test": {
        "workers": _int(low=0, example="2"),
        "batch_size": _int(low=1, nullable=True, example="4"),
        "tta": BOOL,
        "tta_flip": BOOL,
        "data.fold": _int(low=0, nullable=True, example="0"),
        "data.min_size": _int(low=1, nullable=True, example="800"),
        "data.max_size": _int(low=1, nullable=True, example="1333"),
    },
}
# detect.browse composes the training config (conf/browse.yaml starts from train.yaml) and adds its
# own keys; detect.browse checks these again when it runs (a call that did not come through check_cli).
BROWSE_RULES: dict[str, Rule] = {
    "num_images": _int(low=1, example="16"),
    "split": Rule("choice", choices=("train", "val"), example="val"),
    "seed": _int(low=0, high=2**32 - 1, example="0"),
    "grid_columns": _int(low=1, example="4"),
}
RULES["browse"] = {**RULES["train"], **BROWSE_RULES}

# Examples for required (`???`) values.
REQUIRED_EXAMPLES = {"data.root": "/path/to/dataset"}

# The only flags the check runs with; any other (--help, --cfg, --info, -c, shell completion, --config-dir)
# makes it stand aside and leaves the command line to Hydra.
_RUN_FLAGS = {"-m", "--multirun"}


def check_cli(argv: Sequence[str], config_name: str, config_dir: Path = CONF_DIR) -> None:
    """Print the problems of this command line and exit with status 2, or return if there are none."""
    problems = find_problems(argv, config_name, config_dir)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(EXIT_CODE)


def find_problems(argv: Sequence[str], config_name: str, config_dir: Path = CONF_DIR) -> list[str]:
    """The problems of a command line (`sys.argv[1:]`), as user-facing messages; [] when it is fine
    or when the check does not apply (flags such as --help, or a config Hydra cannot compose)."""
    overrides = [a for a in argv if a not in _RUN_FLAGS]
    if not overrides or any(a.startswith("-") for a in overrides):
        return []
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from detect.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name=config_name):
        loader = GlobalHydra.instance().config_loader()
        try:
            parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)
        except Exception:  # a syntax error: Hydra's own message is the right one
            return []
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

        def composed(with_plain: bool) -> DictConfig | None:
            texts = [t for _, t, is_plain in items if t is not None and (with_plain or not is_plain)]
            try:
                return compose(config_name=config_name, overrides=texts, return_hydra_config=True)
            except Exception:  # whatever it is, Hydra reports it when it runs
                return None

        cfg = composed(with_plain=True)
        if cfg is None:  # an unknown key? Compose without the plain overrides and look each one up.
            base = composed(with_plain=False)
            if base is None:
                return []
            return [m for o in plain if (m := unknown_key_message(base, o.key_or_group))]
        unsettable = [o for o, t, is_plain in items if is_plain and t is None]
        problems = [m for o in unsettable if (m := unknown_key_message(cfg, o.key_or_group))]
        problems += sweeper_param_problems(cfg, top_groups)
        if problems:
            return problems
        problems += value_problems(cfg, RULES.get(config_name, {}), plain)
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
    """Values of the wrong type or out of range: the composed value of each key in `rules`, and
    every value of a `-m` sweep over one of them."""
    problems = []
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
            problems.append(_value_message(key, value, rule))
    for override in plain_overrides:
        rule = rules.get(override.key_or_group)
        if rule is None or not override.is_discrete_sweep():
            continue
        try:
            values = [_plain(v) for v in override.sweep_iterator()]
        except Exception:  # a glob or such: Hydra reports it
            continue
        for value in values:
            if not (isinstance(value, str) and "${" in value) and not rule.accepts(value):
                problems.append(_value_message(override.key_or_group, value, rule))
    return problems


def _plain(value: Any) -> Any:
    from hydra.core.override_parser.types import QuotedString

    if isinstance(value, QuotedString):
        return value.text
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _value_message(key: str, value: Any, rule: Rule) -> str:
    example = f" (e.g. {key}={rule.example})" if rule.example else ""
    return f"{key}={_show(value)} must be {rule.describe()}{example}."


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
