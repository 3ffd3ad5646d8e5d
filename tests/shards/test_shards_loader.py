"""Reading shards: train/eval loaders (incl. 2 gloo ranks), timm's reader, on-the-fly dataset."""

from __future__ import annotations

import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fractaldb.search import search_categories
from fractaldb.settings import RenderSettings
from shards.codec import decode_image
from shards.loader import (
    assign_shards,
    make_eval_loader,
    make_train_loader,
    read_dataset_info,
)
from shards.onthefly import OnTheFlyDataset
from shards.presets import Layout
from shards.writer import write_shards

SETTINGS = RenderSettings(image_size=32, points=2000, color="gray", seed=1)
LAYOUT = Layout(instances_per_category=20, samples_per_shard=16)  # 5 x 20 = 100 -> 7 shards
NUM = 100


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cats = search_categories(5, sampler="sigma", seed=2)
    out = tmp_path_factory.mktemp("ds")
    write_shards(cats, SETTINGS, LAYOUT, out, workers=2, progress=False)
    return cats, out


def all_keys(out: Path) -> list[str]:
    keys = []
    for p in sorted(out.glob("fractaldb-*.tar")):
        with tarfile.open(p) as tar:
            keys += [m.name.split(".")[0] for m in tar.getmembers() if m.name.endswith(".cls")]
    return keys


def test_read_dataset_info(data):
    cats, out = data
    info = read_dataset_info(out)
    assert info["num_classes"] == 5 and info["num_samples"] == NUM
    assert info["settings"] == SETTINGS.to_dict() and len(info["manifest_sha256"]) == 64
    assert read_dataset_info(str(out / "fractaldb-{000000..000006}.tar"))["num_samples"] == NUM


def test_train_loader_length_epochs_and_determinism(data):
    _, out = data
    loader = make_train_loader(
        out, batch_size=8, num_workers=2, transform=None, seed=5, return_keys=True
    )
    assert len(loader) == NUM // 8
    epoch0 = list(loader)
    epoch1 = list(loader)  # the next iteration is epoch 1
    assert len(epoch0) == len(epoch1) == len(loader)
    images, labels, keys = epoch0[0]
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
    assert all(int(k[1:7]) == int(lab) for k, lab in zip(keys, labels, strict=True))
    flat0 = [k for b in epoch0 for k in b[2]]
    assert len(set(flat0)) > 0.6 * len(flat0)  # shards are dealt without replacement per round
    again = make_train_loader(
        out, batch_size=8, num_workers=2, transform=None, seed=5, return_keys=True
    )
    assert [k for b in again for k in b[2]] == flat0  # same (seed, epoch) -> same stream
    again.set_epoch(1)
    assert [k for b in again for k in b[2]] == [k for b in epoch1 for k in b[2]]
    assert flat0 != [k for b in epoch1 for k in b[2]]


def test_train_loader_no_hang_with_more_workers_than_shards(data):
    _, out = data
    urls = [str(out / "fractaldb-000000.tar"), str(out / "fractaldb-000001.tar")]
    loader = make_train_loader(
        urls, batch_size=4, num_workers=2, transform=None, rank=2, world_size=3,
        samples_per_epoch=48,
    )  # fmt: skip
    assert len(loader) == 4 and len(list(loader)) == 4


@pytest.mark.parametrize(("world_size", "num_workers"), [(3, 2), (2, 0), (4, 3)])
def test_eval_loader_sees_every_sample_once(data, world_size, num_workers):
    _, out = data
    seen, nbatches = [], []
    for rank in range(world_size):
        loader = make_eval_loader(
            out, batch_size=5, num_workers=num_workers, transform=None, rank=rank,
            world_size=world_size, return_keys=True,
        )  # fmt: skip
        batches = list(loader)
        nbatches.append(len(batches))
        assert len(batches) == len(loader)
        seen += [k for b in batches for k in b[2]]
    assert Counter(seen) == Counter(all_keys(out)) and len(seen) == NUM


def test_pipe_urls_work(data):
    _, out = data
    url = f"pipe:cat {out}/fractaldb-{{000000..000006}}.tar"
    loader = make_eval_loader(url, batch_size=10, num_workers=0, transform=None, return_keys=True)
    assert sorted(k for b in loader for k in b[2]) == sorted(all_keys(out))
    train = make_train_loader(
        url, batch_size=10, num_workers=0, transform=None, samples_per_epoch=30
    )
    assert len(train) == 3 and [len(b[1]) for b in train] == [10, 10, 10]


def test_assign_shards_with_fewer_shards_than_workers():
    for n, g_size in [(2, 5), (7, 3), (1, 4), (3, 3)]:
        cover = Counter()
        for g in range(g_size):
            for shard, offset, stride in assign_shards(n, g, g_size):
                cover.update((shard, i) for i in range(offset, 30, stride))
        assert set(cover.values()) == {1} and len(cover) == n * 30


def _ddp_worker(rank: int, world: int, out: str, port: int, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    loader = make_train_loader(
        out, batch_size=4, num_workers=2, transform=None, seed=0, return_keys=True
    )
    steps = []
    for _images, _labels, keys in loader:
        gathered = [None] * world
        dist.all_gather_object(gathered, list(keys))
        steps.append(gathered)
    lengths = [None] * world
    dist.all_gather_object(lengths, len(loader))
    if rank == 0:
        Path(result).write_text(json.dumps({"steps": steps, "lengths": lengths}))
    dist.destroy_process_group()


def test_train_loader_two_gloo_ranks_see_disjoint_samples(data, tmp_path):
    _, out = data
    result = tmp_path / "ddp.json"
    port = 29500 + os.getpid() % 1000
    mp.spawn(_ddp_worker, args=(2, str(out), port, str(result)), nprocs=2, join=True)
    r = json.loads(result.read_text())
    assert r["lengths"] == [NUM // 8, NUM // 8] and len(r["steps"]) == NUM // 8
    for rank0, rank1 in r["steps"]:
        assert len(rank0) == len(rank1) == 4
        assert not set(rank0) & set(rank1)


def test_timm_and_plain_webdataset_read_the_shards(data):
    import timm.data
    import webdataset as wds

    _, out = data
    ds = timm.data.create_dataset("wds/fractaldb", root=str(out), split="train", is_training=False)
    items = list(ds)
    assert len(items) == NUM
    img, target = items[0]
    assert img.size == (32, 32) and 0 <= target < 5
    plain = wds.WebDataset(str(out / "fractaldb-{000000..000006}.tar"), shardshuffle=False)
    samples = list(plain.decode("l").to_tuple("__key__", "png", "cls"))
    assert len(samples) == NUM
    assert all(int(key[1:7]) == int(cls) for key, _, cls in samples)  # c<category>_i<instance>


def test_on_the_fly_matches_the_shards(data, tmp_path):
    cats, out = data
    ds = OnTheFlyDataset(cats, SETTINGS, LAYOUT.instances_per_category, seed=0)
    with tarfile.open(out / "fractaldb-000003.tar") as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".png")][:4]
        for m in members:
            c, i = int(m.name[1:7]), int(m.name[9:15])
            assert (decode_image(tar.extractfile(m).read()) == ds.image(c, i)).all()
    # colour: channel order survives encode (RGB->BGR) and decode (BGR->RGB)
    hue = SETTINGS.replace(color="hue")
    cout = tmp_path / "hue"
    write_shards(cats, hue, Layout(instances_per_category=2, samples_per_shard=10), cout,
                 progress=False)  # fmt: skip
    hue_ds = OnTheFlyDataset(cats, hue, 2)
    with tarfile.open(cout / "fractaldb-000000.tar") as tar:
        m = next(m for m in tar.getmembers() if m.name.endswith(".png"))
        c, i = int(m.name[1:7]), int(m.name[9:15])
        decoded = decode_image(tar.extractfile(m).read())
    assert decoded.shape == (32, 32, 3) and (decoded == hue_ds.image(c, i)).all()


def test_on_the_fly_splits_ranks_and_workers(data):
    cats, _ = data
    seen = []
    for rank in range(2):
        ds = OnTheFlyDataset(cats, SETTINGS, 20, rank=rank, world_size=2, seed=4)
        loader = torch.utils.data.DataLoader(ds, batch_size=10, num_workers=2)
        labels = [lab for _, lab in loader]
        assert sum(len(x) for x in labels) == len(ds) == NUM // 2
        seen += [ds.cell(p) for p in range(rank, NUM, 2)]
    assert len(set(seen)) == NUM  # one epoch covers the grid exactly once
    a = OnTheFlyDataset(cats, SETTINGS, 20, seed=4)
    b = OnTheFlyDataset(cats, SETTINGS, 20, seed=4, epoch=1)
    assert [a.cell(p) for p in range(10)] != [b.cell(p) for p in range(10)]
    img, label = next(iter(a))
    assert img.shape == (3, 32, 32) and label == a.cell(0)[0]
    assert np.array_equal(img[0].numpy(), a.image(*a.cell(0))[..., 0])
