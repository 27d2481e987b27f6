#!/usr/bin/env python3
"""Writes the synthetic data set the forest parity test and the benchmarks use.

Standard library only (random.Random with a fixed seed), so the bytes are the same on every
machine and Python 3 version. 2000 inliers from two correlated Gaussian clusters in 6
dimensions and 100 anomalies from a wider Gaussian that overlaps them: hard enough that the
ROC AUC is well below 1, so a difference between implementations shows.

    python3 bench/make_parity_data.py > scorer/tests/fixtures/parity.csv
"""

import random
import sys

DIMS = 6
INLIERS = 2000
ANOMALIES = 100


def main() -> None:
    rng = random.Random(20081215)
    rows = []
    for i in range(INLIERS):
        centre = 2.0 if i % 2 == 0 else -2.0
        base = rng.gauss(0.0, 1.0)
        x = [centre + base, centre * 0.5 + 0.8 * base + 0.6 * rng.gauss(0.0, 1.0)]
        x += [rng.gauss(0.0, 1.0) for _ in range(DIMS - 2)]
        rows.append((x, 0))
    for _ in range(ANOMALIES):
        rows.append(([rng.gauss(0.0, 2.2) for _ in range(DIMS)], 1))
    rng.shuffle(rows)
    out = sys.stdout
    out.write("id," + ",".join(f"f{j}" for j in range(DIMS)) + ",label\n")
    for i, (x, label) in enumerate(rows):
        out.write(f"{i}," + ",".join(f"{v:.6f}" for v in x) + f",{label}\n")


if __name__ == "__main__":
    main()
