#!/usr/bin/env python3
"""scikit-learn's IsolationForest ROC AUC on the parity data, the fixture the Rust test
compares against (scorer/tests/forest_parity.rs).

    python3 -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn numpy
    /tmp/skl/bin/python bench/sklearn_parity.py scorer/tests/fixtures/parity.csv \
        > scorer/tests/fixtures/sklearn_parity.json
"""

import csv
import json
import sys

import numpy as np
import sklearn
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

TREES = 100
SAMPLE_SIZE = 256
SEEDS = range(20)


def main() -> None:
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    features = [c for c in rows[0] if c not in ("id", "label")]
    x = np.array([[float(r[c]) for c in features] for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    aucs = []
    for seed in SEEDS:
        forest = IsolationForest(
            n_estimators=TREES, max_samples=SAMPLE_SIZE, random_state=seed
        ).fit(x)
        # score_samples is the negated paper score: negate it back, higher = more anomalous.
        aucs.append(roc_auc_score(y, -forest.score_samples(x)))
    json.dump(
        {
            "sklearn_version": sklearn.__version__,
            "numpy_version": np.__version__,
            "trees": TREES,
            "sample_size": SAMPLE_SIZE,
            "seeds": len(SEEDS),
            "features": features,
            "rows": len(rows),
            "mean_auc": float(np.mean(aucs)),
            "std_auc": float(np.std(aucs)),
            "aucs": [float(a) for a in aucs],
        },
        sys.stdout,
        indent=2,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
