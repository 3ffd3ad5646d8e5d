"""--resume auto on data of another class count: one line naming both counts, exit 2, and the
old run left byte for byte as it was (pre-training and fine-tuning)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures_downstream import make_image_folder
from helpers import assert_one_line_error
from torch import nn

from finetune.cli import finetune
from fractaldb.core.errors import FractalDBError
from pretrain.cli import pretrain
from pretrain.engine.checkpoint import check_class_count, check_shapes

PRETRAIN = ["supervised", "--recipe", "tiny-cpu", "--device", "cpu", "--workers", "0",
            "--epochs", "1"]  # fmt: skip
FINETUNE = ["--dataset", "folder", "--val-per-class", "1", "--init", "scratch",
            "--model", "vit_tiny_patch16_224", "--model-arg", "patch_size=8",
            "--model-arg", "depth=1", "--model-arg", "embed_dim=16", "--model-arg", "num_heads=1",
            "--img-size", "16", "--batch-size", "2", "--epochs", "1", "--device", "cpu",
            "--workers", "0", "--amp", "none", "--set", "warmup_epochs=0"]  # fmt: skip


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_pretrain_resume_on_other_class_count_is_one_line(tmp_path):
    out = str(tmp_path / "run")
    first = CliRunner().invoke(pretrain, [*PRETRAIN, "--data", "synthetic:8", "--out", out])
    assert first.exit_code == 0, first.output
    before = snapshot(tmp_path / "run")
    res = CliRunner().invoke(
        pretrain, [*PRETRAIN, "--data", "synthetic:16", "--out", out, "--resume", "auto"]
    )
    assert_one_line_error(res, "made with 8 classes", "the data has 16", "new --out")
    assert snapshot(tmp_path / "run") == before


def test_finetune_resume_on_other_data_root_is_one_line(tmp_path):
    three = make_image_folder(tmp_path / "three", per_class=3)
    four = make_image_folder(tmp_path / "four", ("a", "b", "c", "d"), per_class=3)
    out = str(tmp_path / "run")
    first = CliRunner().invoke(finetune, [*FINETUNE, "--data-root", str(three), "--out", out])
    assert first.exit_code == 0, first.output
    before = snapshot(tmp_path / "run")
    res = CliRunner().invoke(
        finetune, [*FINETUNE, "--data-root", str(four), "--out", out, "--resume", "auto"]
    )
    # the init note comes first (stdout); the error is the one line on stderr
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    error = res.output.strip().splitlines()[-1]
    for needle in ("Error: ", "made with 3 classes", "the data has 4", "new --out"):
        assert needle in error, res.output
    assert snapshot(tmp_path / "run") == before


def test_other_shapes_than_a_head_are_named_not_called_classes(tmp_path):
    class Tiny(nn.Module):
        def __init__(self, width: int, classes: int, depth: int = 1) -> None:
            super().__init__()
            self.num_classes = classes
            self.body = nn.Sequential(*[nn.Linear(4, width) for _ in range(depth)])
            self.head = nn.Linear(width, classes)

    path, saved = tmp_path / "last.pt", Tiny(8, 3).state_dict()
    for check in (check_class_count, check_shapes):
        check(path, saved, Tiny(8, 3))  # the same shapes: no complaint
        check_class_count(path, saved, Tiny(6, 3))  # not a class count: left to the others
    with pytest.raises(FractalDBError, match="made with 3 classes, the data has 5"):
        check_class_count(path, saved, Tiny(8, 5))
    with pytest.raises(FractalDBError, match=r"do not fit .*body\.0\.weight \(8, 4\) vs \(6, 4\)"):
        check_shapes(path, saved, Tiny(6, 3))
    with pytest.raises(FractalDBError, match=r"body\.1\.weight missing"):
        check_shapes(path, saved, Tiny(8, 3, depth=2))


def test_pretrain_resume_with_another_depth_names_the_setting(tmp_path):
    out = str(tmp_path / "run")
    first = CliRunner().invoke(pretrain, [*PRETRAIN, "--data", "synthetic:4", "--out", out])
    assert first.exit_code == 0, first.output
    before = snapshot(tmp_path / "run")
    res = CliRunner().invoke(pretrain, [*PRETRAIN, "--data", "synthetic:4", "--out", out,
                                        "--resume", "auto", "--model-arg", "depth=3"])  # fmt: skip
    assert_one_line_error(res, "settings differ", "model_args", "new --out")
    assert snapshot(tmp_path / "run") == before
