"""A fast reader of tar streams: the loader's hot path spends no time in Python's tarfile.

`tarfile` builds a TarInfo object per member and re-parses every header field; a shard of small
images spends more time there than in decoding the images. This reader takes what a WebDataset
needs - the name and bytes of each regular file - straight from the 512-byte headers (ustar,
GNU long names and pax paths), checks each header's checksum, and leaves grouping files into
samples to webdataset's own `group_by_keys`.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any, BinaryIO

import webdataset as wds
from webdataset.tariterators import group_by_keys

from shards.badsamples import report_bad

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
REGULAR = (b"0", b"\0", b"7")


def _number(field: bytes) -> int:
    """Parse a numeric header field: octal text, or GNU base-256 when the top bit is set."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_path(data: bytes) -> bytes | None:
    """The `path` record of a pax extended header, if any."""
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        if key == b"path":
            return value
        pos += length
    return None


def iter_tar_members(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """Yield (name, data) of each regular file in a tar stream; raise ValueError if damaged."""
    read = stream.read
    long_name: bytes | None = None
    first = True
    while True:
        header = read(BLOCK)
        if len(header) < BLOCK:
            if first and not header:
                raise ValueError("empty file")
            # every tar ends with zero blocks: a stream that stops before them was cut short
            raise ValueError(
                "truncated tar header" if header else "truncated: no end-of-archive marker"
            )
        first = False
        if header == ZERO_BLOCK:
            return
        if _number(header[148:156]) != sum(header) - sum(header[148:156]) + 8 * 32:
            raise ValueError("tar header checksum mismatch")
        size = _number(header[124:136])
        data = read(size)
        if len(data) < size:
            raise ValueError("truncated tar member")
        if size % BLOCK and len(read(BLOCK - size % BLOCK)) < BLOCK - size % BLOCK:
            raise ValueError("truncated tar member padding")
        kind = header[156:157]
        if kind == b"L":
            long_name = data.rstrip(b"\0")
            continue
        if kind == b"x":
            long_name = _pax_path(data) or long_name
            continue
        if kind in REGULAR:
            name = header[:100].split(b"\0", 1)[0]
            if header[257:262] == b"ustar" and header[345] != 0:
                name = header[345:500].split(b"\0", 1)[0] + b"/" + name
            yield (long_name or name).decode("utf-8"), data
        long_name = None


def shard_samples(
    url: str,
    expected: int | None = None,
    offset: int = 0,
    stride: int = 1,
    report: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield the WebDataset samples of one shard URL (path, brace-free URL or `pipe:`): every
    `stride`-th from `offset`.

    An unreadable or damaged (e.g. truncated) shard ends early and is reported to the loader's
    tally of skipped data (shards/badsamples.py: counted, named, the run stops past
    --max-bad-samples), or is a warning outside a training loader. With `expected` (the
    shard's sample count from _info.json) it counts as the samples of this slice it lost;
    without, as one item. `report=False` reads without reporting (a shard read again).
    """
    want = len(range(offset, expected, stride)) if expected is not None else None
    got = 0

    def bad(name: str, reason: str) -> None:
        if report:
            lost = max(want - got, 1) if want is not None else 1
            what = f"{lost} of its {want} sample(s) lost, " if want is not None else ""
            report_bad(name, what + reason, count=lost)

    try:
        stream = wds.gopen(url)
    except Exception as exc:  # noqa: BLE001 - any opener failure is reported, not fatal
        bad(f"shard {url}", f"unreadable: {exc}")
        return
    try:
        files = ({"fname": n, "data": d, "__url__": url} for n, d in iter_tar_members(stream))
        for sample in islice(group_by_keys(files), offset, None, stride):
            got += 1
            yield sample
    except (OSError, ValueError) as exc:
        bad(f"the rest of shard {url}", f"damaged: {exc}")
    finally:
        stream.close()
