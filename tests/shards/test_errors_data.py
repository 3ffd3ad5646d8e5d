"""Unreadable data during training: skipped, counted in metrics.jsonl and the summary, the
first files named, and a one-line stop past --max-bad-samples."""

from __future__ import annotations

import io
import tarfile

import pytest
from click.testing import CliRunner

from fractaldb.cli import main
from tests.helpers import read_metrics

TINY = ["pretrain", "supervised", "--recipe", "tiny-cpu", "--device", "cpu", "--workers", "0",
        "--batch-size", "4", "--epochs", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory):
    """2 categories x 8 instances in 2 shards of 8 samples (16 px point renders)."""
    from fractaldb.search import search_categories
    from fractaldb.settings import RenderSettings
    from shards.presets import Layout
    from shards.writer import write_shards

    root = tmp_path_factory.mktemp("fdb") / "train"
    render = RenderSettings(image_size=16, points=300, mode="point", scheme="none", flips=False)
    layout = Layout(instances_per_category=8, samples_per_shard=8, format="png")
    write_shards(search_categories(2, sampler="sigma", seed=2), render, layout, root,
                 workers=1, progress=False)  # fmt: skip
    return root


def copy_folder(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def damage_one_image(shard) -> str:
    """Replace the image of the shard's second sample by garbage; return that sample's key."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    images = [m for m, _ in members if m.name.endswith(".png")]
    victim = images[1].name
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for m, data in members:
            if m.name == victim:
                data = b"not a png at all" * 4
                m.size = len(data)
            out.addfile(m, io.BytesIO(data))
    shard.write_bytes(buf.getvalue())
    return victim.rsplit(".", 1)[0]


def test_undecodable_shard_sample_is_skipped_counted_and_named(shard_folder, tmp_path):
    data = copy_folder(shard_folder, tmp_path / "data")
    key = damage_one_image(sorted(data.glob("*.tar"))[0])
    run = tmp_path / "run"
    res = CliRunner().invoke(main, [*TINY, "--data", str(data), "--out", str(run)])
    assert res.exit_code == 0, res.output
    epochs = read_metrics(run, "epoch")
    assert all(e["bad_samples"] >= 1 for e in epochs)
    assert epochs[-1]["bad_samples_total"] == sum(e["bad_samples"] for e in epochs)
    assert key in res.output and "skipped" in res.output  # named, and in the final summary

    res = CliRunner().invoke(
        main, [*TINY, "--data", str(data), "--out", str(tmp_path / "r0"), "--max-bad-samples", "0"]
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and key in errors[0] and "--max-bad-samples" in errors[0]


def cut_after_first_sample(shard) -> int:
    """Truncate the shard at the first header of its second sample (a member boundary, no
    end-of-archive marker); return the samples it held."""
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    keys = [m.name.split(".", 1)[0] for m in members]
    second = next(m for m, k in zip(members, keys, strict=True) if k != keys[0])
    shard.write_bytes(shard.read_bytes()[: second.offset])
    return len(set(keys))


def test_truncated_shard_counts_its_lost_samples_every_epoch(shard_folder, tmp_path):
    data = copy_folder(shard_folder, tmp_path / "data")
    shard = sorted(data.glob("*.tar"))[0]
    held = cut_after_first_sample(shard)  # all are lost: a sample ends where the next begins
    run = tmp_path / "run"
    res = CliRunner().invoke(main, [*TINY, "--data", str(data), "--out", str(run)])
    assert res.exit_code == 0, res.output
    epochs = read_metrics(run, "epoch")
    assert [e["bad_samples"] for e in epochs] == [held, held]  # once per epoch, not per re-read
    assert epochs[-1]["bad_samples_total"] == 2 * held
    assert shard.name in res.output and f"{held} of its {held} sample(s) lost" in res.output

    res = CliRunner().invoke(main, [*TINY, "--data", str(data), "--out", str(tmp_path / "r1"),
                                    "--max-bad-samples", str(held - 1)])  # fmt: skip
    assert res.exit_code == 2 and "Traceback" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and shard.name in errors[0] and f"{held} unreadable" in errors[0]


def test_missing_shard_is_counted_not_only_warned(shard_folder, tmp_path):
    data = copy_folder(shard_folder, tmp_path / "data")
    missing = sorted(data.glob("*.tar"))[1]
    missing.unlink()
    run = tmp_path / "run"
    res = CliRunner().invoke(main, [*TINY, "--data", str(data), "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert read_metrics(run, "epoch")[0]["bad_samples"] >= 1
    assert missing.name in res.output


def test_no_readable_shard_at_all_stops_with_one_line(shard_folder, tmp_path):
    data = copy_folder(shard_folder, tmp_path / "data")
    for shard in data.glob("*.tar"):
        shard.write_bytes(b"")
    res = CliRunner().invoke(main, [*TINY, "--data", str(data), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "fractaldb-000000.tar" in errors[0], res.output


def test_unreadable_image_in_an_image_folder_is_skipped_and_named(tmp_path):
    from tests.fixtures_downstream import make_image_folder

    root = make_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=4)
    (root / "a" / "img_1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    run = tmp_path / "ft"
    res = CliRunner().invoke(main, [
        "finetune", "--dataset", "folder", "--data-root", str(root), "--val-per-class", "1",
        "--init", "scratch", "--model", "vit_tiny_patch16_224", "--img-size", "32",
        "--model-arg", "patch_size=8", "--model-arg", "depth=1", "--model-arg", "embed_dim=32",
        "--model-arg", "num_heads=2", "--batch-size", "2", "--epochs", "1", "--device", "cpu",
        "--workers", "0", "--set", "warmup_epochs=0", "--out", str(run),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    (epoch,) = read_metrics(run, "epoch")
    assert epoch["bad_samples"] >= 1 and "img_1.png" in res.output


def test_unreadable_validation_photo_is_left_out_and_counted_not_replaced(tmp_path):
    """Accuracy is measured on the photos that were read; the others are counted beside it
    (each once), never replaced by the next photo, which may be of another class."""
    import json

    from tests.fixtures_downstream import make_image_folder

    train = make_image_folder(tmp_path / "train", classes=("a", "b"), per_class=4)
    test = make_image_folder(tmp_path / "test", classes=("a", "b"), per_class=3, seed=1)
    for bad in (test / "a" / "img_0.png", test / "a" / "img_1.png", test / "b" / "img_2.png"):
        bad.write_bytes(b"")  # 3 of 6 unreadable, two of them next to each other
    run = tmp_path / "ft"
    res = CliRunner().invoke(main, [
        "finetune", "--dataset", "folder", "--data-root", str(train), "--test-root", str(test),
        "--init", "scratch", "--model", "vit_tiny_patch16_224", "--img-size", "32",
        "--model-arg", "patch_size=8", "--model-arg", "depth=1", "--model-arg", "embed_dim=32",
        "--model-arg", "num_heads=2", "--batch-size", "2", "--epochs", "1", "--device", "cpu",
        "--workers", "0", "--set", "warmup_epochs=0", "--set", "train_eval_samples=0",
        "--out", str(run),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    (epoch,) = read_metrics(run, "epoch")
    assert epoch["val_samples"] == 3 and epoch["val_unreadable"] == 3
    assert epoch["bad_samples"] == 0  # held-out photos are counted in their own split only
    row = json.loads((run / "results.json").read_text())["history"][0]
    assert row["test_samples"] == 3 and row["test_unreadable"] == 3  # schema 2 names


def test_bad_sample_tally_is_shared_with_worker_processes():
    import multiprocessing

    from shards.badsamples import BadSamples

    bad = BadSamples(max_bad_samples=2)
    procs = [
        multiprocessing.get_context("fork").Process(target=bad.record, args=(f"s{i}", "bad"))
        for i in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert bad.epoch_count == 3 and bad.total == 3 and len(bad.first()) == 3
    with pytest.raises(Exception, match="--max-bad-samples 2"):
        bad.check()
    bad.start_epoch()
    assert bad.epoch_count == 0 and bad.total == 3
    bad.check()
