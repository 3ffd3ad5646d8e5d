"""Cost of the load-time divergence check (fractaldb.ifs.divergent_categories) per category,
against the search that produced the categories (same run, same machine).

    uv run python benchmarks/divergence_check.py [--num-categories 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

from fractaldb.ifs import divergent_categories
from fractaldb.search import search_categories


def main() -> None:
    """Search categories, then time the check over them; print ms per category."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-categories", type=int, default=300)
    parser.add_argument("--sampler", default="sigma", choices=["sigma", "fractaldb"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    cats = search_categories(args.num_categories, args.sampler, seed=1, workers=1)
    search_s = time.perf_counter() - t0
    divergent_categories(cats[:1])  # compile / load the kernel cache outside the timing
    t0 = time.perf_counter()
    bad = divergent_categories(cats)
    check_s = time.perf_counter() - t0
    out = {
        "categories": len(cats),
        "sampler": args.sampler,
        "flagged": len(bad),
        "check_ms_per_category": 1e3 * check_s / len(cats),
        "check_vs_search": check_s / search_s,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{len(cats)} {args.sampler} categories: check {out['check_ms_per_category']:.3f} "
            f"ms/category ({out['check_vs_search']:.2%} of the search time), {len(bad)} flagged"
        )


if __name__ == "__main__":
    main()
