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


@pytest.mark.parametrize("cut", ["between-members", "in-padding", "inside-member", "before-end"])
def test_truncated_shard_is_detected_and_counted_as_its_lost_samples(tmp_path, cut):
    """A shard cut short anywhere - even exactly at a member boundary, where the reader used
    to see a normal end - is reported with the samples it lost (from the expected count)."""
    path = tmp_path / "s.tar"
    make_tar(path, MEMBERS)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    fifth = members[4]  # the second sample's second member (.cls, 2 bytes + padding)
    end = members[-1].offset + 512  # after the last header (the directory): no end marker
    at = {
        "between-members": fifth.offset,
        "in-padding": fifth.offset_data + fifth.size + 10,
        "inside-member": fifth.offset_data + 1,
        "before-end": end,
    }[cut]
    path.write_bytes(path.read_bytes()[:at])
    with pytest.warns(UserWarning, match="skipping") as warned:
        samples = list(shard_samples(str(path), expected=12))
    (message,) = [str(w.message) for w in warned]
    assert str(path) in message
    lost = 12 - len(samples)
    assert f"{max(lost, 1)} of its 12 sample(s) lost" in message
    if cut != "before-end":
        assert lost == 11  # the first sample is complete, the second lost its .cls and .json


def test_truncated_shard_counts_its_lost_samples_in_the_tally(tmp_path):
    from shards.badsamples import BadSamples, SkipUndecodableStage

    path = tmp_path / "s.tar"
    make_tar(path, MEMBERS)
    with tarfile.open(path) as tar:
        # a boundary after sample 4; a sample ends where the next begins, so 4 is lost too
        cut = tar.getmembers()[12].offset
    path.write_bytes(path.read_bytes()[:cut])
    bad = BadSamples()
    got = list(SkipUndecodableStage(lambda s: s, bad)(shard_samples(str(path), expected=12)))
    assert len(got) == 3 and bad.epoch_count == 9 and str(path) in bad.first()[0]
    # every other sample of the shard (a worker's share): 5 of its 6 lost
    bad = BadSamples()
    got = list(SkipUndecodableStage(lambda s: s, bad)(shard_samples(str(path), 12, 1, 2)))
    assert len(got) == 1 and bad.epoch_count == 5
