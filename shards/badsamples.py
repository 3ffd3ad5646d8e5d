"""One policy for data that cannot be read during training: skip it, count it, name it, stop
past a threshold.

An undecodable image (in a shard or an image folder), a missing shard or a truncated one is
skipped; `BadSamples` counts them across the loader's worker processes (shared memory), keeps
the names of the first few, and `CheckedLoader` stops the run with one line once an epoch has
skipped more than `max_bad_samples`. The engine records the counts in RUN/metrics.jsonl and
the final summary. Without a tally (plain library use) a skipped item is a warning.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fractaldb.core.errors import FractalDBError

FIRST_NAMES = 5  # how many skipped items are named
_NAMES_BYTES = 2048
# distinct items an epoch remembers so that each is counted once however often it is read (an
# endless shard stream wraps round, a train-accuracy probe re-reads training photos); items past
# this many are counted at every read
SEEN_PER_EPOCH = 4096


def _name_hash(name: str) -> int:
    # hash() differs between processes (spawned loader workers): a stable digest instead
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 1


class UndecodableSample(Exception):
    """Raised by a decode step for a sample whose image or label cannot be read."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


# what the skipped items are and how to repair them, by the kind of data a tally serves
KINDS = {
    "shards": (
        "sample(s) or shard(s)",
        "find the damaged shards with `fractaldb shards verify DIR`, then re-run the render "
        "command that wrote them (it regenerates them)",
    ),
    "photos": (
        "photo(s)",
        "replace or delete the unreadable files named (photos cannot be regenerated)",
    ),
}


class BadSamples:
    """Counts of skipped samples (this epoch and in all), shared with loader worker processes;
    an item read more than once in an epoch is counted once. `kind` (KINDS) words the stop."""

    def __init__(self, max_bad_samples: int | None = None, kind: str = "shards") -> None:
        ctx = multiprocessing.get_context()
        self.limit = max_bad_samples
        self.what, self.fix = KINDS[kind]
        self._epoch = ctx.Value("q", 0)
        self._total = ctx.Value("q", 0, lock=False)
        self._names = ctx.Array("c", _NAMES_BYTES, lock=False)
        self._seen = ctx.Array("q", SEEN_PER_EPOCH, lock=False)
        self._seen_count = ctx.Value("q", 0, lock=False)

    def _first_this_epoch(self, name: str) -> bool:
        """True unless `name` was already recorded this epoch (call under the lock)."""
        key, n = _name_hash(name), self._seen_count.value
        if key in self._seen[:n]:
            return False
        if n < SEEN_PER_EPOCH:
            self._seen[n] = key
            self._seen_count.value = n + 1
        return True

    def record(self, name: str, reason: str, count: int = 1) -> None:
        """Count `count` skipped samples (a damaged shard's lost ones, or one; one sample named
        again this epoch is not counted again); remember the name if it is among the first."""
        with self._epoch.get_lock():
            # a shard's loss is reported once per slice read (shards/tarstream.py): each counts
            if count == 1 and not self._first_this_epoch(name):
                return
            self._epoch.value += count
            self._total.value += count
            names = self._names.value.decode(errors="replace")
            if names.count("\n") < FIRST_NAMES and f"{name} (" not in names:
                line = f"{name} ({reason.splitlines()[0][:120] if reason else 'unreadable'})\n"
                self._names.value = (names + line).encode()[: _NAMES_BYTES - 1]

    def start_epoch(self) -> None:
        """Reset the per-epoch count (the limit applies per epoch)."""
        with self._epoch.get_lock():
            self._epoch.value = 0
            self._seen_count.value = 0

    @property
    def epoch_count(self) -> int:
        """Samples skipped since the epoch started."""
        return int(self._epoch.value)

    @property
    def total(self) -> int:
        """Samples skipped since this tally was created."""
        return int(self._total.value)

    def first(self) -> list[str]:
        """The first few skipped items, `name (reason)`."""
        return [ln for ln in self._names.value.decode(errors="replace").splitlines() if ln]

    def summary(self) -> str:
        """One line for the end of a run."""
        first = "; ".join(self.first())
        return f"skipped {self.total} unreadable {self.what} in all; first: {first}"

    def check(self, cause: BaseException | None = None) -> None:
        """Raise the one-line stop error if this epoch skipped more than the limit (or if the
        loader failed after skipping items: they are the likely cause)."""
        over = self.limit is not None and self.epoch_count > self.limit
        if not over and not (cause is not None and self.epoch_count):
            return
        raise FractalDBError(
            f"stopped: {self.epoch_count} unreadable {self.what} skipped this epoch "
            f"(--max-bad-samples {self.limit}); first: {'; '.join(self.first())}; fix: "
            f"{self.fix}, or raise --max-bad-samples"
        )


_active: BadSamples | None = None


def report_bad(name: str, reason: str, count: int = 1) -> None:
    """Record `count` skipped samples in the tally of the pipeline running in this process,
    else warn."""
    if _active is None:
        warnings.warn(f"skipping {name}: {reason}", stacklevel=2)
    else:
        _active.record(name, reason, count)


class SkipUndecodableStage:
    """A pipeline stage (a class, so loader workers can pickle it) that decodes samples,
    skipping (and reporting) undecodable ones.

    While it runs, `bad` is the tally that shard readers upstream report to (report_bad).
    """

    def __init__(self, decode: Callable[[Any], Any], bad: BadSamples | None) -> None:
        self.decode, self.bad = decode, bad

    def __call__(self, samples: Iterable[Any]) -> Iterator[Any]:
        """Yield decoded samples, reporting the undecodable ones."""
        global _active
        it = iter(samples)
        while True:
            # the tally is active only while upstream readers run, never while suspended
            previous, _active = _active, self.bad
            try:
                sample = next(it)
            except StopIteration:
                return
            finally:
                _active = previous
            try:
                decoded = self.decode(sample)
            except UndecodableSample as exc:
                (self.bad.record if self.bad is not None else report_bad)(exc.name, exc.reason)
                continue
            yield decoded


class LeaveOutUndecodable:
    """A map-style evaluation dataset whose undecodable items are recorded in `bad` (the tally
    of the split the files belong to) and left out: they come back as None (dropped by
    `collate_readable`), never replaced by another image, which may be of another class."""

    def __init__(self, dataset: Any, bad: BadSamples) -> None:
        self.dataset, self.bad = dataset, bad

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("dataset", "bad"):
            raise AttributeError(name)  # not yet set (unpickling): no recursion
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except UndecodableSample as exc:
            self.bad.record(exc.name, exc.reason)
            return None


def collate_readable(items: list[Any]) -> Any:
    """torch's default_collate of the items that were read (None: none of them was)."""
    from torch.utils.data import default_collate

    kept = [item for item in items if item is not None]
    return default_collate(kept) if kept else None


class CheckedLoader:
    """Wraps a loader: starts the epoch's count (training loaders) and stops the run in the
    training process once too many samples were skipped. len() and attributes pass through."""

    def __init__(self, loader: Any, bad: BadSamples, new_epoch: bool) -> None:
        self.loader, self.bad, self.new_epoch = loader, bad, new_epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("loader", "bad", "new_epoch"):
            raise AttributeError(name)  # not yet set (unpickling): no recursion
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        if self.new_epoch:
            self.bad.start_epoch()
        # iter() now, not at the first batch: a TrainLoader starts its workers in iter()
        try:
            it = iter(self.loader)
        except Exception as exc:
            self.bad.check(cause=exc)
            raise
        return self._checked(it)

    def _checked(self, it: Iterator[Any]) -> Iterator[Any]:
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except Exception as exc:
                self.bad.check(cause=exc)
                raise
            self.bad.check()
            if batch is not None:  # None: no item of the batch could be read (left out)
                yield batch


class NamedImageLoader:
    """An image-folder loader (PIL) whose unreadable files raise UndecodableSample naming them."""

    def __init__(self, load: Callable[[str], Any]) -> None:
        self.load = load

    def __call__(self, path: str) -> Any:
        try:
            return self.load(path)
        except (OSError, SyntaxError, ValueError) as exc:  # PIL raises all three for bad files
            raise UndecodableSample(str(path), f"{type(exc).__name__}: {exc}") from exc


class SkipUndecodable:
    """A map-style dataset whose undecodable items are recorded and replaced by the next one
    (deterministically), so batches keep their size."""

    def __init__(self, dataset: Any, bad: BadSamples) -> None:
        self.dataset, self.bad = dataset, bad

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("dataset", "bad"):
            raise AttributeError(name)  # not yet set (unpickling): no recursion
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        n = len(self.dataset)
        for step in range(n):
            try:
                return self.dataset[(index + step) % n]
            except UndecodableSample as exc:
                self.bad.record(exc.name, exc.reason)
        raise FractalDBError("no readable image in the dataset; fix: check the data folder")
