"""Helpers shared by the engine and CLI tests (supervised and MAE)."""

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


def assert_one_line_error(result, *needles: str) -> None:
    """A CliRunner result failed with exit code 2 and one `Error:` line holding every needle."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for n in needles:
        assert n in lines[0], lines[0]
