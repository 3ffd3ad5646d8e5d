"""Helpers shared by the engine tests (supervised and MAE)."""

from __future__ import annotations


class CrashAtEpoch:
    """Wraps a DataSource; asking for `epoch`'s loader simulates the job being killed."""

    def __init__(self, inner, epoch: int) -> None:
        self.inner, self.epoch = inner, epoch
        self.num_classes = inner.num_classes
        self.num_samples = inner.num_samples
        self.manifest_sha256 = inner.manifest_sha256

    def train_loader(self, epoch, **kw):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")
        return self.inner.train_loader(epoch, **kw)

    def val_loader(self, **kw):
        return self.inner.val_loader(**kw)
