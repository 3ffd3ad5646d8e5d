"""One unreadable file counts once per epoch, in the split it belongs to, whatever re-reads it
(an endless shard stream wrapping round, the train-accuracy probe), so --max-bad-samples N
stops the run at N + 1 files, not at half that."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fractaldb.cli import main
from tests.fixtures_downstream import make_image_folder
from tests.helpers import read_metrics
from tests.shards.test_errors_data import damage_one_image

PRETRAIN = ["pretrain", "supervised", "--recipe", "tiny-cpu", "--device", "cpu", "--workers",
            "0", "--batch-size", "4", "--epochs", "2"]  # fmt: skip
FINETUNE = ["finetune", "--dataset", "folder", "--val-per-class", "2", "--init", "scratch",
            "--model", "vit_tiny_patch16_224", "--img-size", "16", "--model-arg", "patch_size=8",
            "--model-arg", "depth=1", "--model-arg", "embed_dim=16", "--model-arg",
            "num_heads=1", "--batch-size", "2", "--epochs", "2", "--device", "cpu",
            "--workers", "0", "--set", "warmup_epochs=0"]  # fmt: skip


@pytest.fixture(scope="module")
def damaged_shards(tmp_path_factory):
    """2 categories x 8 instances in 2 shards, one image garbage: 15 readable of the 16 an
    epoch needs, so every epoch's stream wraps round to the damaged sample again."""
    from fractaldb.search import search_categories
    from fractaldb.settings import RenderSettings
    from shards.presets import Layout
    from shards.writer import write_shards

    root = tmp_path_factory.mktemp("fdb") / "train"
    render = RenderSettings(image_size=16, points=300, mode="point", scheme="none", flips=False)
    layout = Layout(instances_per_category=8, samples_per_shard=8, format="png")
    write_shards(search_categories(2, sampler="sigma", seed=2), render, layout, root,
                 workers=1, progress=False)  # fmt: skip
    return root, damage_one_image(sorted(root.glob("*.tar"))[0])


def test_one_damaged_shard_image_counts_once_per_epoch(damaged_shards, tmp_path):
    data, key = damaged_shards
    run = tmp_path / "run"
    res = CliRunner().invoke(
        main, [*PRETRAIN, "--data", str(data), "--out", str(run), "--max-bad-samples", "1"]
    )
    assert res.exit_code == 0, res.output
    epochs = read_metrics(run, "epoch")
    assert [e["bad_samples"] for e in epochs] == [1, 1]
    assert key in res.output


@pytest.fixture
def photos(tmp_path):
    """2 classes x 6 photos, the last 2 of each held out; one training and one held-out photo
    are not images."""
    root = make_image_folder(tmp_path / "photos", classes=("a", "b"), per_class=6)
    (root / "a" / "img_1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")  # training
    (root / "b" / "img_5.png").write_bytes(b"not a png")  # held out
    return root


def test_one_broken_photo_counts_once_in_its_split(photos, tmp_path):
    run = tmp_path / "run"
    res = CliRunner().invoke(
        main, [*FINETUNE, "--data-root", str(photos), "--out", str(run), "--max-bad-samples", "1"]
    )
    assert res.exit_code == 0, res.output
    epochs = read_metrics(run, "epoch")
    assert [e["bad_samples"] for e in epochs] == [1, 1]  # the training photo, once per epoch
    assert [e["val_unreadable"] for e in epochs] == [1, 1]  # the held-out one, apart
    skipped = [ln for ln in res.output.splitlines() if "skipped" in ln]
    assert skipped and all("img_1.png" in ln and "img_5.png" not in ln for ln in skipped)
    (held,) = [ln for ln in res.output.splitlines() if "left out" in ln]
    assert "1 unreadable held-out photo(s)" in held and "img_5.png" in held


def test_max_bad_samples_trips_past_the_intended_count(photos, tmp_path):
    res = CliRunner().invoke(
        main, [*FINETUNE, "--data-root", str(photos), "--out", str(tmp_path / "r"),
               "--max-bad-samples", "0"]
    )  # fmt: skip
    assert res.exit_code == 2 and "Traceback" not in res.output
    (error,) = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert "1 unreadable" in error and "img_1.png" in error and "img_5.png" not in error
