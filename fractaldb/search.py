"""Category search: draw candidate systems, keep those that pass the acceptance test.

Candidate j is a pure function of (seed, j), candidates are judged in parallel and accepted
in index order, so the result is the same for any number of workers. Small searches use
threads (the kernels release the GIL; no start-up cost); large ones use spawned processes,
each judging runs of 64 candidates, because each candidate's sampling, seeding and fill
count hold the GIL for about a tenth of its time, which caps threads at a few cores.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict
from functools import partial

import numpy as np

from fractaldb.categories import Category, CategorySet, family_of
from fractaldb.core.seeding import TAG_FILL, TAG_SEARCH, derive_rng, derive_seed
from fractaldb.core.stopping import leave_ctrl_c_to_parent, stop_signals_deferred
from fractaldb.core.workers import exit_when_orphaned
from fractaldb.ifs import FillResult, make_sampler, measure_fill

BATCH = 64
PROCESS_MIN_CATEGORIES = 64  # searches this large amortise the worker processes' start-up
# draws with not one accepted before a search gives up: below 1 in 10,000 (FractalDB's
# defaults accept 1 in 50), a 1,000-category search would run for days
NO_ACCEPT_DRAWS = 10_000
ESTIMATE_AFTER_DRAWS = 2_000  # draws timed before a search's duration is projected
LONG_SEARCH_SECONDS = 3600.0  # a search projected to run longer says so


def evaluate_candidate(sampler, seed: int, j: int) -> tuple[np.ndarray, np.ndarray, FillResult]:
    """Draw candidate j and run its acceptance render."""
    maps, probs = sampler.sample(derive_rng(seed, TAG_SEARCH, j))
    return maps, probs, measure_fill(maps, probs, derive_seed(seed, TAG_FILL, j))


def evaluate_run(
    sampler, seed: int, start: int, stop: int
) -> list[tuple[np.ndarray, np.ndarray, FillResult]]:
    """Evaluate candidates start..stop-1 (one task of a worker process)."""
    return [evaluate_candidate(sampler, seed, j) for j in range(start, stop)]


def long_search_warning(
    num_categories: int, accepted: int, candidates: int, seconds: float
) -> str | None:
    """One line announcing a search projected, from its first `candidates` draws in
    `seconds`, to run for more than LONG_SEARCH_SECONDS; None otherwise."""
    if candidates < ESTIMATE_AFTER_DRAWS or accepted == 0:
        return None
    draws = num_categories * candidates / accepted
    total = seconds * draws / candidates
    if total <= LONG_SEARCH_SECONDS:
        return None
    return (
        f"warning: at {accepted / candidates:.1%} of draws accepted, {num_categories:,} "
        f"categories take about {draws:,.0f} draws, about {total / 3600:,.1f} h here; Ctrl-C "
        "stops it (nothing is written), or lower min_fill or --num-categories"
    )


def _nothing_accepted(stats: dict[str, int], min_fill: float, best_fill: float) -> str:
    """The hint of a search that accepted none of its draws."""
    draws = stats["candidates"]
    if stats["rejected_fill"] == 0:
        return (
            f"0 of {draws} draws accepted: every one diverged; fix: change the sampler "
            "settings (--set)"
        )
    return (
        f"0 of {draws} draws accepted with min_fill={min_fill:g} (the best filled "
        f"{best_fill:.3f}); fix: lower min_fill below that, e.g. --set min_fill="
        f"{math.floor(best_fill * 80) / 100:g}"
    )


def _worker_init(parent_pid: int) -> None:
    """Worker processes leave Ctrl-C to the parent, which stops them, and end with it."""
    leave_ctrl_c_to_parent()
    exit_when_orphaned(parent_pid)


def _executor(workers: int, processes: bool) -> Executor:
    """Spawned worker processes (safe on every OS) or threads."""
    if processes:
        return ProcessPoolExecutor(workers, mp.get_context("spawn"), initializer=_worker_init,
                                   initargs=(os.getpid(),))  # fmt: skip
    return ThreadPoolExecutor(max_workers=workers)


def search_categories(
    num_categories: int,
    sampler: str = "fractaldb",
    seed: int = 0,
    workers: int = 1,
    max_candidates: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    processes: bool | None = None,
    **sampler_settings: object,
) -> CategorySet:
    """Find `num_categories` accepted systems; the result does not depend on `workers`.

    `progress(accepted, candidates)` is called after each batch of candidates. `processes`
    chooses worker processes over threads (default: for >= 64 categories and >= 2 workers).
    """
    if num_categories < 1:
        raise ValueError(f"num_categories must be >= 1, got {num_categories}")
    if family_of(sampler) == "contour":
        return contour_set(num_categories, sampler, seed, sampler_settings)
    smp = make_sampler(sampler, **sampler_settings)
    limit = max_candidates if max_candidates is not None else 10_000 * num_categories + 10_000
    accepted: list[Category] = []
    stats = {"candidates": 0, "rejected_fill": 0, "rejected_divergent": 0}
    best_fill = 0.0  # of the rejected draws: what the hint quotes
    workers = max(1, workers)
    if processes is None:
        processes = workers > 1 and num_categories >= PROCESS_MIN_CATEGORIES
    with _executor(workers, processes) as pool:
        start = 0
        while len(accepted) < num_categories:
            if start >= limit:
                raise RuntimeError(
                    f"only {len(accepted)} of {num_categories} categories found in {limit} "
                    "candidates; lower min_fill or change the sampler settings"
                )
            batch = range(start, min(start + BATCH * workers, limit))
            if processes:
                starts = range(batch.start, batch.stop, BATCH)
                stops = [min(a + BATCH, batch.stop) for a in starts]
                with stop_signals_deferred():  # submitting starts the worker processes
                    chunks = pool.map(partial(evaluate_run, smp, seed), starts, stops)
                results = (r for chunk in chunks for r in chunk)
            else:
                results = pool.map(lambda j: evaluate_candidate(smp, seed, j), batch)
            for maps, probs, fill in results:
                if len(accepted) == num_categories:
                    break
                stats["candidates"] += 1
                if fill.divergent:
                    stats["rejected_divergent"] += 1
                elif fill.fill_rate < smp.min_fill:
                    stats["rejected_fill"] += 1
                    best_fill = max(best_fill, fill.fill_rate)
                else:
                    accepted.append(Category(maps=maps, probs=probs, fill_rate=fill.fill_rate))
            start = batch.stop
            if progress is not None:
                progress(len(accepted), stats["candidates"])
            if not accepted and stats["candidates"] >= NO_ACCEPT_DRAWS:
                raise RuntimeError(_nothing_accepted(stats, smp.min_fill, best_fill))
    stats["accepted"] = len(accepted)
    settings = asdict(smp)
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    return CategorySet(
        categories=tuple(accepted),
        sampler=sampler,
        sampler_settings=settings,
        seed=seed,
        search_stats=stats,
    )


def contour_set(
    num_categories: int, sampler: str, seed: int, sampler_settings: dict[str, object]
) -> CategorySet:
    """A contour family's categories, drawn from its ranges (every candidate is accepted)."""
    from fractaldb.contour_sets import sample_contour_categories

    cats, used = sample_contour_categories(num_categories, sampler, seed, **sampler_settings)
    stats = {"candidates": num_categories, "rejected_fill": 0, "rejected_divergent": 0}
    return CategorySet(cats, sampler, used, seed, {**stats, "accepted": num_categories})
