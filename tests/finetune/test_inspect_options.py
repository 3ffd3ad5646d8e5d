"""`fractaldb inspect` options: fewer images than --num-images asks is said in one line, the
per-image pictures stay a readable size however many images the numbers use, and --model
beside run folders only (which name their own model) is refused."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from finetune.inspection import PICTURE_IMAGES
from fractaldb.cli import main
from tests.finetune.test_inspect import make_run
from tests.helpers import assert_one_line_error


def test_more_images_asked_than_held_is_said_and_pictures_keep_their_size(tmp_path):
    run = make_run(tmp_path / "vit", "vit_tiny_patch16_224")
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    held = PICTURE_IMAGES + 4
    for i in range(held):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    sizes = {}
    for asked in ("100000", str(PICTURE_IMAGES)):
        out = tmp_path / f"pics{asked}"
        res = CliRunner().invoke(main, ["inspect", str(run), "--images", str(folder),
                                        "--num-images", asked, "--out", str(out)])  # fmt: skip
        assert res.exit_code == 0, res.output
        with Image.open(out / "rollout.png") as rollout, Image.open(out / "heads.png") as heads:
            sizes[asked] = (rollout.size, heads.size)
        if asked == "100000":
            note = f"--num-images 100000, but {folder} holds {held} readable image(s): used {held}"
            assert note in res.output
            assert f"first {PICTURE_IMAGES} of the {held} images" in res.output
            assert len(json.loads((out / "inspect.json").read_text())["images"]) == held
    # the per-image pictures are as large as for PICTURE_IMAGES images, not a long strip
    assert sizes["100000"] == sizes[str(PICTURE_IMAGES)]


def test_model_with_run_folders_only_is_refused(tmp_path):
    run = make_run(tmp_path / "vit", "vit_tiny_patch16_224")
    res = CliRunner().invoke(main, ["inspect", str(run), "--images", str(tmp_path),
                                    "--model", "deit_tiny_patch16_224", "--out",
                                    str(tmp_path / "pics")])  # fmt: skip
    assert_one_line_error(res, "--model deit_tiny_patch16_224 only applies to a .safetensors")
    assert not (tmp_path / "pics").exists()
