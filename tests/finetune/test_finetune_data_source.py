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


class RandomlyAugmented:
    """Each item draws from python's random, numpy's and torch's global generators, as timm's
    PIL transforms do in loader workers."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        import random

        import numpy as np

        drawn = [random.random(), float(np.random.rand()), float(torch.rand(()))]
        return torch.tensor([float(i), *drawn]), i % 3


def draws(loader) -> list[list[float]]:
    return [row.tolist() for x, _ in loader for row in x]


def test_augmentation_is_the_same_with_any_number_of_workers():
    def epoch(workers: int, epoch: int = 0, **kw) -> list[list[float]]:
        data = DatasetData(RandomlyAugmented(), None, 3, "sha256:x", workers=workers, **kw)
        return draws(data.train_loader(epoch, batch_size=4, seed=5, rank=0, world_size=1))

    none = epoch(0)
    assert epoch(1) == none and epoch(2) == none
    assert epoch(2, persistent_workers=True) == none
    assert epoch(0, epoch=1) != none
    # a sample seen twice in one epoch (samples_per_epoch > dataset) is augmented anew
    twice = epoch(0, samples_per_epoch=24)
    first_seen: dict[float, list[float]] = {}
    repeats = [row for row in twice if first_seen.setdefault(row[0], row) is not row]
    assert repeats and all(row != first_seen[row[0]] for row in repeats)
    # reading samples in the training process leaves its generators where they were
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    epoch(0)
    assert torch.equal(torch.rand(3), expected)


def test_world_size_does_not_change_a_samples_augmentation():
    data = DatasetData(RandomlyAugmented(), None, 3, "sha256:x")
    one = {row[0]: row for row in draws(data.train_loader(0, batch_size=2, seed=5, rank=0,
                                                          world_size=1))}  # fmt: skip
    two = [row for r in range(2)
           for row in draws(data.train_loader(0, batch_size=2, seed=5, rank=r, world_size=2))]  # fmt: skip
    assert all(one[row[0]] == row for row in two)
