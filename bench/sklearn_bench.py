#!/usr/bin/env python3
"""scikit-learn's IsolationForest on the data scorer/benches/forest.rs uses, for the side-by-side
figures in docs/performance.md: fit of 100 trees x 256 samples, batch scoring rate, and
single-vector latency. Defaults as scikit-learn ships them (n_jobs=None: one core), like the
Rust benchmark; batch scoring also with joblib's threading backend on every core, the way
scikit-learn's `score_samples` documentation says to parallelize it (its best configuration,
beside the Rust `score_batch_parallel` line).

    just bench-detect            # both, side by side
    .venv-bench/bin/python bench/sklearn_bench.py scorer/tests/fixtures/parity.csv
"""

import csv
import statistics
import sys
import time

import numpy as np
import sklearn
from joblib import cpu_count, parallel_backend
from sklearn.ensemble import IsolationForest

TILES = 50  # as TILES in scorer/benches/forest.rs


def timed(fn, repeat):
    """Median wall time of `repeat` calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    features = [c for c in rows[0] if c not in ("id", "label")]
    x = np.array([[float(r[c]) for c in features] for r in rows])
    params = dict(n_estimators=100, max_samples=256, random_state=42)

    fit = timed(lambda: IsolationForest(**params).fit(x), 20)
    model = IsolationForest(**params).fit(x)
    batch = np.tile(x, (TILES, 1))
    score = timed(lambda: model.score_samples(batch), 5)
    with parallel_backend("threading", n_jobs=-1):
        score_all = timed(lambda: model.score_samples(batch), 5)
    single_rows = [x[i : i + 1] for i in range(200)]
    single = timed(lambda: [model.score_samples(r) for r in single_rows], 5) / len(single_rows)

    print(f"scikit-learn {sklearn.__version__} (numpy {np.__version__}), {x.shape[1]} features")
    print(f"sklearn/fit_100x256          {fit * 1e3:10.3f} ms")
    print(f"sklearn/score_batch_{len(batch)}   {len(batch) / score:10.0f} samples/s")
    print(
        f"sklearn/score_batch_{len(batch)}_{cpu_count()}_threads"
        f" {len(batch) / score_all:10.0f} samples/s"
    )
    print(f"sklearn/score_single         {single * 1e6:10.1f} us")


if __name__ == "__main__":
    main()
