"""The loader's fast tar reader agrees with Python's tarfile and webdataset, and fails safely."""

from __future__ import annotations

import io
import tarfile

import pytest
import webdataset as wds

from shards.tarstream import iter_tar_members, shard_samples


def make_tar(path, members, fmt=tarfile.USTAR_FORMAT):
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("somedir")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)


MEMBERS = [
    (f"c{c:03d}_i{i:03d}.{ext}", bytes([c, i]) * (1 + 300 * (ext == "png")))
    for c in range(3)
    for i in range(4)
    for ext in ("png", "cls", "json")
]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_members_match_tarfile_including_long_names(tmp_path, fmt):
    long = "a/" + "deep_folder_name/" * 9 + "sample_with_a_very_long_name.png"  # > 100 bytes
    members = [*MEMBERS, (long, b"x" * 1000)]
    if fmt != tarfile.USTAR_FORMAT:  # ustar splits long paths at a slash only
        members.append(("e" * 120 + ".cls", b"7"))
    path = tmp_path / "s.tar"
    make_tar(path, members, fmt)
    with open(path, "rb") as f:
        got = list(iter_tar_members(f))
    assert got == members  # the directory is skipped; names and bytes exact


def test_samples_match_webdataset(tmp_path):
    path = tmp_path / "s.tar"
    make_tar(path, MEMBERS)
    ours = list(shard_samples(str(path)))
    ref = list(wds.tarfile_samples([{"url": str(path)}]))
    assert len(ours) == len(ref) == 12
    for a, b in zip(ours, ref, strict=True):
        assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    piped = list(shard_samples(f"pipe:cat {path}"))
    assert [s["__key__"] for s in piped] == [s["__key__"] for s in ours]


@pytest.mark.parametrize("damage", ["flip-header", "truncate"])
def test_damaged_shard_warns_and_stops(tmp_path, damage):
    path = tmp_path / "s.tar"
    make_tar(path, MEMBERS)
    with tarfile.open(path) as tar:
        fifth = tar.getmembers()[4]  # damage the second sample's second member
    data = bytearray(path.read_bytes())
    if damage == "flip-header":
        data[fifth.offset + 10] ^= 0xFF  # a byte of its name: the checksum no longer matches
    else:
        data = data[: fifth.offset_data + 1]
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="skipping the rest of shard"):
        samples = list(shard_samples(str(path)))
    assert 0 < len(samples) < 12


def test_missing_shard_warns(tmp_path):
    with pytest.warns(UserWarning, match="skipping shard"):
        assert list(shard_samples(str(tmp_path / "nope.tar"))) == []
