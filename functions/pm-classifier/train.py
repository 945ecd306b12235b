"""Train the product-matching classifiers: ``python functions/pm-classifier/train.py [--out DIR]``.

The logic lives in :mod:`hydro_serving.demo.training` so that ``hydro demo`` runs the very same
code; this script is the reproducible entry point a data scientist reads first. It writes
``DIR/pm-classifier/`` (model.joblib) and ``DIR/pm-classifier-gb/`` (model.onnx), each with
``signature.json``, ``training-data.csv`` and ``metrics.json``, and prints the held-out scores.
Upload them with ``hydro model upload`` or let ``hydro demo`` do it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydro_serving.demo.training import DEFAULT_SEED, train_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/demo-models"), help="output folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the generated data set")
    args = parser.parse_args(argv)
    result = train_all(args.out, args.seed)
    print(f"trained on {result.train_pairs} pairs; judged on {result.test_pairs} pairs of held-out product lines")
    print(f"pm-classifier    (random forest, sklearn): {result.sklearn_metrics.line()}")
    print(f"pm-classifier-gb (gradient boosting, ONNX): {result.onnx_metrics.line()}")
    print(f"models in {result.sklearn_dir} and {result.onnx_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
