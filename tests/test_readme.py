"""README.md stays a manual of what exists: every config option and runtime key documented, every
`python -m detect.<module>` real, the two quickstart commands first, the table of contents resolving.

Reads text and yaml only (no torch): it runs in well under a second.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CONF = REPO / "conf"
CONFIG_REFERENCE = "## Config reference"


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def without_code_blocks(text: str) -> str:
    """The README with its fenced code blocks blanked (a `# comment` in a block is no heading)."""
    return re.sub(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", "", text, flags=re.S | re.M)


def section(text: str, heading: str) -> str:
    """The text under `heading` (e.g. '## Config reference') up to the next heading of its level or higher."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == heading]
    assert starts, f"README.md has no heading {heading!r}: add it (the checks below look for names under it)."
    body = []
    for line in lines[starts[0] + 1:]:
        match = re.match(r"^(#+) ", line)
        if match and len(match.group(1)) <= level:
            break
        body.append(line)
    return "\n".join(body)


def subsections(text: str, level: int = 3) -> dict[str, str]:
    """Heading text -> body of every heading of `level` in `text` (code blocks are not headings)."""
    prose = without_code_blocks(text)
    parts = re.split(rf"^{'#' * level} (.+)$", prose, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def named(name: str, text: str) -> bool:
    """`name` appears in backticks, alone or as the start of `name=...` / `name.key`."""
    return re.search("`" + re.escape(name) + r"[`=.\[]", text) is not None


def flat_keys(node: dict, prefix: str = "") -> list[str]:
    """Dotted keys of every leaf of a yaml mapping: {'wandb': {'enabled': ..}} -> ['wandb.enabled']."""
    keys = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += flat_keys(value, dotted + ".")
        else:
            keys.append(dotted)
    return keys


def option_files() -> list[Path]:
    """Every option of every config group: the yaml files in the folders of conf/."""
    return sorted(p for p in CONF.rglob("*.yaml") if p.parent != CONF)


def primary_configs() -> list[Path]:
    """The configs an entry point is launched with: conf/train.yaml, conf/test.yaml, ..."""
    return sorted(CONF.glob("*.yaml"))


def test_the_config_reference_names_every_option_under_conf():
    reference = section(readme_text(), CONFIG_REFERENCE)
    missing = []
    for path in option_files():
        option = path.relative_to(CONF).with_suffix("").as_posix()  # model/backbone/resnet50
        if not named(option, reference):
            missing.append(f"  `{option}` ({path.relative_to(REPO)}): add a row `| `{option}` | what it is |` to the "
                           f"table of group `{path.parent.relative_to(CONF).as_posix()}` (or its parent group)")
    assert not missing, ("README.md's '## Config reference' section ('### Groups and options') does not name "
                         "these config options:\n" + "\n".join(missing))


def test_the_config_reference_names_every_runtime_key():
    reference = section(readme_text(), CONFIG_REFERENCE)
    runtime = yaml.safe_load((CONF / "runtime" / "default.yaml").read_text())
    runtime.pop("defaults", None)  # Hydra's defaults list (the schema), not a runtime key
    missing = [key for key in flat_keys(runtime) if not named(f"runtime.{key}", reference)]
    assert not missing, ("README.md's '## Config reference' does not name these keys of conf/runtime/default.yaml: "
                         + ", ".join(f"runtime.{k}" for k in missing)
                         + ". Add a row `| `runtime.<key>` | what it is |` for each to '### Runtime keys'.")


@pytest.mark.parametrize("config", primary_configs(), ids=lambda p: p.name)
def test_the_config_reference_names_every_top_level_key_of_each_primary_config(config):
    reference = section(readme_text(), CONFIG_REFERENCE)
    entry = config.stem  # train.yaml belongs to python -m detect.train
    parts = subsections(reference)
    matching = [body for title, body in parts.items() if f"conf/{config.name}" in title or f"detect.{entry}" in title]
    assert matching, (f"README.md's '## Config reference' has no subsection for {config.relative_to(REPO)}: add a "
                      f"'### conf/{config.name}' heading with a table of its top-level keys.")
    keys = list(yaml.safe_load(config.read_text()) or {})
    missing = [key for key in keys if not any(named(key, body) for body in matching)]
    assert not missing, (f"README.md's '### conf/{config.name}' subsection of '## Config reference' does not name "
                         f"these top-level keys of {config.relative_to(REPO)}: {', '.join(missing)}. Add a row "
                         "`| `<key>` | what it is |` for each.")


def test_every_detect_module_the_readme_runs_exists():
    missing = []
    for number, line in enumerate(readme_text().splitlines(), start=1):
        for module in re.findall(r"-m\s+detect\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", line):
            path = REPO / "detect" / Path(*module.split("."))
            if not (path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()):
                missing.append(f"  line {number}: python -m detect.{module} (no detect/{module.replace('.', '/')}.py)")
    assert not missing, ("README.md runs modules that do not exist; fix the name or remove the command:\n"
                         + "\n".join(missing))


def test_every_command_line_module_is_in_the_readme():
    text = readme_text()
    modules = sorted(p.stem for p in (REPO / "detect").glob("*.py")
                     if re.search(r"^if __name__ == .__main__.:", p.read_text(encoding="utf-8"), flags=re.M))
    missing = [m for m in modules if not re.search(rf"-m\s+detect\.{m}\b", text)]
    assert not missing, ("These command-line modules are not shown in README.md: "
                         + ", ".join(f"python -m detect.{m}" for m in missing)
                         + ". Add a section (and a line in '## Structure') saying what each does and how to call it.")


def test_the_first_code_block_is_the_two_quickstart_commands():
    blocks = re.findall(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", readme_text(), flags=re.S | re.M)
    assert blocks, "README.md has no code block: the first one must hold `make train` and `make test`."
    first = blocks[0]
    for command in ("make train", "make test"):
        assert re.search(rf"^{command}\b", first, flags=re.M), (
            f"The first code block of README.md must start a line with `{command}` (the quickstart, kept first); "
            f"it is:\n{first}")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_every_link_of_the_table_of_contents_finds_its_heading():
    text = readme_text()
    headings = re.findall(r"^#{1,6} (.+)$", without_code_blocks(text), flags=re.M)
    anchors = {github_anchor(h) for h in headings}
    contents = section(text, "## Contents")
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    assert links, "README.md's '## Contents' has no links to its sections."
    broken = [link for link in links if link not in anchors]
    assert not broken, (f"README.md's '## Contents' links to headings that do not exist: {broken}. Rename the link "
                        "or the heading (anchors: lower case, punctuation dropped, spaces as '-').")
    quickstart, contents_start = text.index("## Quickstart"), text.index("## Contents")
    later = [m.start() for m in re.finditer(r"^## ", text, flags=re.M) if m.start() > quickstart]
    assert later and later[0] == contents_start, "'## Contents' must come right after '## Quickstart'."
