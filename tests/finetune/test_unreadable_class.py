"""A class folder whose files are not images is named as such (not as a batch-size or
bad-sample problem), and a photo folder's stop line gives a photo folder's fix."""

from __future__ import annotations

from click.testing import CliRunner
from fixtures_downstream import make_image_folder

from fractaldb.cli import main

FINETUNE = ["finetune", "--dataset", "folder", "--val-per-class", "1", "--init", "scratch",
            "--model", "vit_tiny_patch16_224", "--img-size", "16", "--model-arg", "patch_size=8",
            "--model-arg", "depth=1", "--model-arg", "embed_dim=16", "--model-arg",
            "num_heads=1", "--epochs", "1", "--device", "cpu", "--workers", "0",
            "--set", "warmup_epochs=0"]  # fmt: skip


def error_line(res) -> str:
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    (line,) = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    return line


def test_class_of_text_files_named_jpg_is_named(tmp_path):
    root = make_image_folder(tmp_path / "photos", classes=("a", "b"), per_class=5)
    (root / "c").mkdir()
    for k in range(5):
        (root / "c" / f"{k}.jpg").write_text("not a photo\n")
    for batch in ("32", "4"):
        line = error_line(CliRunner().invoke(main, [
            *FINETUNE, "--data-root", str(root), "--batch-size", batch,
            "--out", str(tmp_path / f"run{batch}"),
        ]))  # fmt: skip
        assert "class 'c'" in line and "4 file(s) tried" in line, line
        assert "--batch-size" not in line and "shard" not in line and "render" not in line
        assert not (tmp_path / f"run{batch}").exists()


def test_photo_folder_stop_line_has_a_photo_fix(tmp_path):
    root = make_image_folder(tmp_path / "photos", classes=("a", "b"), per_class=5)
    (root / "a" / "img_0.png").write_text("not a photo\n")
    line = error_line(CliRunner().invoke(main, [
        *FINETUNE, "--data-root", str(root), "--batch-size", "2", "--max-bad-samples", "0",
        "--out", str(tmp_path / "run"),
    ]))  # fmt: skip
    assert "1 unreadable photo(s)" in line and "img_0.png" in line, line
    assert "replace or delete" in line and "shard" not in line and "render" not in line
