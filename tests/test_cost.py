"""Cost beside accuracy: FLOPs counted as by hand, the cost a finished run records in summary.json,
`detect.profile` on a config and on a run, and `detect.runs` showing cost columns (a dash for runs
measured before this existed) and plotting score against cost."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from detect.engine.cost import flops_per_image, measure_cost
from tests.conftest import run_cli, tiny_train_args


class Toy(nn.Module):
    """A detector-shaped toy: a list of images in, per-image outputs out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, images):
        return [self.fc(self.conv(image[None]).mean((-2, -1))) for image in images]


def test_flops_of_a_conv_and_a_linear_layer_equal_the_hand_count():
    # conv: 8 outputs x 3 inputs x 3 x 3 taps at 16 x 16 positions; linear: 8 x 4; one multiply-add = 2 FLOPs
    hand = 2 * (8 * 3 * 3 * 3 * 16 * 16) + 2 * (8 * 4)
    assert flops_per_image(Toy(), 16, 16, torch.device("cpu")) == hand
    cost = measure_cost(Toy(), 16, 16, torch.device("cpu"), warmup=1, repeats=3)
    assert cost["params_m"] == round((8 * 3 * 9 + 8 + 8 * 4 + 4) / 1e6, 3) and cost["latency_ms"] > 0
    assert cost["size"] == [16, 16] and cost["device"] == "cpu" and cost["batch"] == 1


@pytest.fixture(scope="module")
def finished_run(tiny_demo_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cost") / "outputs" / "tester" / "tiny" / "run"
    done = run_cli(tiny_train_args(tiny_demo_root, run_dir, "schedule.epochs=1", "runtime.max_iters_per_epoch=1",
                                   "runtime.profile.repeats=2"))
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


def test_a_finished_run_records_its_cost_and_says_so(finished_run):
    cost = json.loads((finished_run / "summary.json").read_text())["cost"]
    assert cost["params_m"] > 1 and cost["gflops"] > 0.1 and cost["latency_ms"] > 0
    assert cost["size"] == [96, 96] and cost["repeats"] == 2
    assert "GFLOPs per image" in (finished_run / "train.log").read_text()


def test_profile_measures_a_config_and_rewrites_a_runs_cost(finished_run, capsys):
    from detect.profile import main

    assert main(["model=faster_rcnn_r18_demo", "data.min_size=64", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "model=faster_rcnn_r18_demo" in out and "input 64x64" in out and "GFLOPs" not in out
    assert "FLOPs" in out and "parameters" in out and "latency" in out
    assert main([f"run={finished_run}", "checkpoint=last", "--size", "80", "--repeats", "1"]) == 0
    assert "written to" in capsys.readouterr().out
    assert json.loads((finished_run / "summary.json").read_text())["cost"]["size"] == [80, 80]


def test_runs_shows_cost_columns_a_dash_for_older_runs_and_plots_them(finished_run, tmp_path, capsys):
    from detect.runs import main

    older = finished_run.parent / "older"
    older.mkdir(exist_ok=True)
    summary = json.loads((finished_run / "summary.json").read_text())
    summary.pop("cost")
    (older / "summary.json").write_text(json.dumps(summary))
    root = finished_run.parents[2]
    png = tmp_path / "cost.png"
    assert main(["--root", str(root), "--plot", str(png)]) == 0
    out, err = capsys.readouterr()
    header, _, *lines = out.splitlines()
    assert "params M" in header and "GFLOPs" in header and "ms/img" in header
    by_dir = {line.split()[-1]: line for line in lines}
    columns = header.index("GFLOPs")
    assert by_dir[str(older)][columns:columns + 6].strip() == "-"
    assert by_dir[str(finished_run)][columns:columns + 6].strip() not in ("", "-")
    assert "1 of 2 runs have a cost and a score" in err
    from PIL import Image

    pixels = torch.tensor(list(Image.open(png).convert("L").getdata()), dtype=torch.float32)
    assert pixels.std() > 5  # something was drawn
