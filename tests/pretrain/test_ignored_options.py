"""An option that does nothing in the chosen mode is refused in one line naming the option
that does apply, never silently ignored (e.g. --image-size, meant --img-size, with --data)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from fractaldb.cli import main

PRETRAIN = ["pretrain", "supervised", "--recipe", "tiny-cpu", "--device", "cpu"]
DATASET = ["--dataset", "folder", "--val-per-class", "1", "--init", "scratch",
           "--model", "vit_tiny_patch16_224"]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--data", "synthetic:4", "--image-size", "64"],
         ["--image-size 64 only applies to --on-the-fly", "fix: --img-size 64"]),
        (["--data", "synthetic:4", "--points", "500"], ["--points 500 only applies", "drop it"]),
        (["--data", "synthetic:4", "--mode", "patch"], ["--mode patch only applies"]),
        (["--data", "synthetic:4", "--render-device", "cpu"], ["--render-device cpu only"]),
        (["--data", "synthetic:4", "--val-data", "held"],
         ["--val-data held only applies", "synthetic data brings its own"]),
    ],
)  # fmt: skip
def test_pretrain_refuses_options_its_data_ignores(tmp_path, args, needles):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, [*PRETRAIN, *args, "--out", str(out), "--print-config"])
    assert_one_line_error(res, *needles)
    assert not out.exists()


def test_render_options_still_apply_with_on_the_fly(tmp_path):
    cats = tmp_path / "cats.json"
    from fractaldb.search import search_categories

    search_categories(2, sampler="sigma", seed=2).save(cats)
    res = CliRunner().invoke(main, [*PRETRAIN, "--on-the-fly", str(cats), "--image-size", "24",
                                    "--points", "500", "--out", str(tmp_path / "r"),
                                    "--print-config"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "image_size: 24" in res.output and "points: 500" in res.output


@pytest.mark.parametrize("command", ["finetune", "probe"])
def test_download_with_an_image_folder_is_refused(tmp_path, command):
    (tmp_path / "photos" / "a").mkdir(parents=True)
    res = CliRunner().invoke(main, [command, *DATASET, "--data-root", str(tmp_path / "photos"),
                                    "--download", "--out", str(tmp_path / "r")])  # fmt: skip
    assert_one_line_error(res, "--download only applies to the torchvision datasets", "drop it")
