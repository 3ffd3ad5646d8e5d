"""pretrain.engine.data.DatasetData: the engine's map-style data source used by fine-tuning."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from fractaldb.core.errors import FractalDBError
from pretrain.engine.data import DatasetData


def source(n_train: int = 23, n_val: int = 10, **kw) -> DatasetData:
    train = TensorDataset(torch.arange(n_train).float()[:, None], torch.arange(n_train) % 3)
    val = TensorDataset(torch.arange(n_val).float()[:, None], torch.arange(n_val) % 3)
    return DatasetData(train, val, 3, "sha256:x", **kw)


def ids(loader) -> list[int]:
    return [int(v) for x, _ in loader for v in x[:, 0]]


def test_train_loader_equal_lengths_disjoint_ranks_seeded_per_epoch():
    data = source()
    loaders = [data.train_loader(0, batch_size=3, seed=7, rank=r, world_size=3) for r in range(3)]
    assert [len(x) for x in loaders] == [2, 2, 2]  # 23 // 3 = 7 per rank -> 2 full batches
    per_rank = [ids(x) for x in loaders]
    assert all(len(x) == 6 for x in per_rank)
    flat = [i for x in per_rank for i in x]
    assert len(set(flat)) == len(flat)  # no sample on two ranks
    again = ids(data.train_loader(0, batch_size=3, seed=7, rank=1, world_size=3))
    assert again == per_rank[1]
    assert ids(data.train_loader(1, batch_size=3, seed=7, rank=1, world_size=3)) != again
    assert ids(data.train_loader(0, batch_size=3, seed=8, rank=1, world_size=3)) != again


def test_val_loader_visits_every_sample_once_across_ranks():
    data = source()
    seen = [i for r in range(3) for i in ids(data.val_loader(batch_size=4, rank=r, world_size=3))]
    assert sorted(seen) == list(range(10))


def test_samples_per_epoch_and_too_small_data():
    data = source(samples_per_epoch=50)
    loader = data.train_loader(0, batch_size=5, seed=0, rank=0, world_size=1)
    assert len(loader) == 10 and sorted(set(ids(loader))) == list(range(23))
    with pytest.raises(FractalDBError, match="fewer than one batch"):
        source(n_train=5).train_loader(0, batch_size=3, seed=0, rank=0, world_size=2)


def test_persistent_workers_keep_one_loader_and_follow_each_epochs_order():
    data = source(workers=1, persistent_workers=True)
    first = data.train_loader(0, batch_size=3, seed=7, rank=0, world_size=1)
    epoch0 = ids(first)
    second = data.train_loader(1, batch_size=3, seed=7, rank=0, world_size=1)
    # one DataLoader (behind the bad-sample check) serves every epoch
    assert second.loader is first.loader and first.persistent_workers
    epoch1 = ids(second)
    fresh = source()  # the same orders without persistent workers
    assert epoch0 == ids(fresh.train_loader(0, batch_size=3, seed=7, rank=0, world_size=1))
    assert epoch1 == ids(fresh.train_loader(1, batch_size=3, seed=7, rank=0, world_size=1))
    assert epoch0 != epoch1
