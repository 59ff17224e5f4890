"""Reading the files a user names on a command line (a test.json, a submission, a results file):
a missing, unreadable or malformed file gives one message naming it and the option it came from,
never a traceback. Errors here are failures of the work (exit 1), not of the command line."""

from __future__ import annotations

import json
from pathlib import Path

from detect.errors import DetectError


class InputFileError(DetectError, ValueError):
    """A file named on the command line is missing, unreadable or not what the option expects."""


def read_json(path: str | Path, option: str = "") -> object:
    """The parsed JSON of `path`; `option` ("--gt", "test_json") says where the user gave it."""
    path = Path(path)
    named = f"{option} {path}" if option else str(path)
    if not path.is_file():
        raise InputFileError(f"{named} does not exist" + (" (it is a folder)." if path.is_dir() else "."))
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(f"{named} cannot be read: {err}.") from None
    except json.JSONDecodeError as err:
        raise InputFileError(f"{named} is not valid JSON ({err}).") from None


def read_coco(path: str | Path, option: str = "") -> dict:
    """A COCO file (ground truth or image list): a JSON object with an `images` list."""
    coco = read_json(path, option)
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        named = f"{option} {path}" if option else str(path)
        raise InputFileError(f"{named} is not a COCO file: it needs an 'images' list (a test.json or val.json).")
    return coco
