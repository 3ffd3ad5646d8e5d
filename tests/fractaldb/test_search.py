"""Category search, samplers, fill-rate test and the categories file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import alive, kill_parent_only, workers_of

from fractaldb.categories import load_categories
from fractaldb.core.errors import FractalDBError
from fractaldb.ifs import SigmaSampler, det_probs, measure_fill, sample_singular_values
from fractaldb.search import search_categories

SIERPINSKI = np.array(
    [[0.5, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0], [0.5, 0, 0, 0.5, 0.25, 0.5]], float
)
SQUARE = np.array([[0.5, 0, 0, 0.5, x, y] for x in (0.0, 0.5) for y in (0.0, 0.5)], float)


@pytest.mark.parametrize("sampler", ["fractaldb", "sigma"])
def test_search_is_identical_for_any_number_of_workers(tmp_path, sampler):
    one = search_categories(12, sampler, seed=3, workers=1)
    two = search_categories(12, sampler, seed=3, workers=2)
    assert one.to_json_bytes() == two.to_json_bytes()
    assert len(one) == 12
    other_seed = search_categories(12, sampler, seed=4, workers=2)
    assert other_seed.sha256 != one.sha256
    if sampler == "fractaldb":  # large searches run in processes: the same categories
        procs = search_categories(12, sampler, seed=3, workers=2, processes=True)
        assert procs.to_json_bytes() == one.to_json_bytes()


def test_search_workers_end_when_the_parent_is_killed(tmp_path):
    # a spawned pool worker used to wait on its task queue for ever once its parent was gone
    cli = str(Path(sys.executable).with_name("fractaldb"))
    cmd = [cli, "search", "-k", "5000", "--sampler", "fractaldb", "--workers", "2", "--out",
           str(tmp_path / "cats.json")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    workers: set[int] = set()
    try:
        deadline = time.time() + 120
        while len(workers_of(proc.pid)) < 2 and time.time() < deadline:
            assert proc.poll() is None, "the search ended before its workers started"
            time.sleep(0.05)
        workers = workers_of(proc.pid)
        assert len(workers) == 2
        assert not kill_parent_only(proc, workers), "orphaned search workers kept running"
        assert not (tmp_path / "cats.json").exists()
    finally:  # nothing left running, whatever failed
        for w in workers | (workers_of(proc.pid) if proc.poll() is None else set()):
            if alive(w):
                os.kill(w, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_fractaldb_search_keeps_only_filled_non_divergent_systems():
    cats = search_categories(10, "fractaldb", seed=1, workers=2)
    stats = cats.search_stats
    assert stats["accepted"] == 10
    assert stats["candidates"] == 10 + stats["rejected_fill"] + stats["rejected_divergent"]
    assert stats["rejected_fill"] > 0
    for c in cats.categories:
        assert c.fill_rate >= 0.2
        assert 2 <= c.num_maps <= 7
        assert np.all(np.abs(c.maps) <= 1.0)
        assert np.isclose(c.probs.sum(), 1.0)
        # Re-measuring with the recorded parameters reproduces an accepted fill rate.


def test_fill_rate_accepts_and_rejects_known_systems():
    square = measure_fill(SQUARE, det_probs(SQUARE), seed=0)
    sierpinski = measure_fill(SIERPINSKI, det_probs(SIERPINSKI), seed=0)
    # 100,000 points spread over a 500x500 square: 1 - exp(-0.4) ~ 0.33 of the pixels.
    assert 0.25 < square.fill_rate < 0.4 and not square.divergent
    assert sierpinski.fill_rate < 0.2 and not sierpinski.divergent
    divergent = np.array([[2.0, 0, 0, 2.0, 1, 0], [1.5, 0.5, 0, 1.5, 0, 1]])
    result = measure_fill(divergent, det_probs(divergent), seed=0)
    assert result.divergent and np.isfinite(result.fill_rate)


def test_sigma_sampler_maps_are_contractive_and_hit_the_sigma_factor():
    sampler = SigmaSampler()
    rng = np.random.default_rng(0)
    for _ in range(200):
        maps, probs = sampler.sample(rng)
        n = len(maps)
        assert n in (2, 3, 4) and np.isclose(probs.sum(), 1)
        svs = np.array([np.linalg.svd(m[:4].reshape(2, 2), compute_uv=False) for m in maps])
        assert np.all(svs[:, 0] < 1.0)  # spectral norm < 1: contractive
        alpha = float(np.sum(svs[:, 0] + 2 * svs[:, 1]))
        assert (5 + n) / 2 - 1e-9 <= alpha <= (6 + n) / 2 + 1e-9


def test_singular_values_respect_their_constraints():
    rng = np.random.default_rng(1)
    for n, alpha in [(2, 3.5), (3, 4.0), (4, 5.0), (2, 6.0)]:
        sv = sample_singular_values(n, alpha, rng)
        assert np.all(sv[:, 1] >= 0) and np.all(sv[:, 1] <= sv[:, 0] + 1e-12)
        assert np.all(sv[:, 0] <= 1.0 + 1e-12)
        assert np.isclose(np.sum(sv[:, 0] + 2 * sv[:, 1]), alpha)


def test_fixed_sigma_band_for_one_parameter_fractals():
    cats = search_categories(5, "sigma", seed=0, n_choices=[2], sigma_min=3.5, sigma_max=3.5)
    for c in cats.categories:
        svs = np.array([np.linalg.svd(m[:4].reshape(2, 2), compute_uv=False) for m in c.maps])
        assert np.isclose(np.sum(svs[:, 0] + 2 * svs[:, 1]), 3.5)


def test_categories_file_round_trip_is_exact(tmp_path):
    cats = search_categories(6, "fractaldb", seed=2)
    path = tmp_path / "cats.json"
    cats.save(path)
    loaded = load_categories(path)
    assert loaded.to_json_bytes() == path.read_bytes()
    assert loaded.sha256 == cats.sha256
    for a, b in zip(loaded.categories, cats.categories, strict=True):
        assert np.array_equal(a.maps, b.maps)
    data = json.loads(path.read_text())
    assert data["format_version"] == 1 and data["sampler"] == "fractaldb" and data["seed"] == 2
    assert len(path.read_text().splitlines()) < 20  # one line per category: small, readable


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"format_version": 1, "sampler": "fractaldb", "categories": []}',
        '{"format_version": 1, "sampler": "x", "categories": [{"maps": [[1, 2]], "probs": [1]}]}',
        '{"format_version": 7, "sampler": "fractaldb", "categories": []}',
    ],
)
def test_malformed_categories_file_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(FractalDBError, match="malformed"):
        load_categories(path)
