"""Train a tiny Spark ML PipelineModel in its own process and write what the tests compare against.

Run as ``python spark_train.py OUT``: writes ``OUT/model`` (``model.write().save``) and
``OUT/expected.json`` (the rows scored by ``model.transform`` in the same session). A separate
process, because a JVM started inside pytest would outlive a crashed test run; this one dies with it.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

ROWS = [{"x1": 0.1, "x2": 0.2, "cat": "a"}, {"x1": 0.9, "x2": 0.8, "cat": "b"}, {"x1": 0.6, "x2": 0.3, "cat": "a"},
        {"x1": 0.2, "x2": 0.95, "cat": "b"}]


def main(out: Path) -> None:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StringIndexer, VectorAssembler
    from pyspark.sql import SparkSession

    started = time.monotonic()
    spark = (SparkSession.builder.master("local[1]").appName("hydro-test-train")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.log.level", "ERROR").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    try:
        rng = random.Random(0)
        data = []
        for _ in range(200):
            x1, x2, cat = rng.random(), rng.random(), rng.choice("ab")
            data.append((x1, x2, cat, float(x1 + x2 + (0.3 if cat == "b" else 0.0) > 1.1)))
        frame = spark.createDataFrame(data, ["x1", "x2", "cat", "label"])
        pipeline = Pipeline(stages=[
            StringIndexer(inputCol="cat", outputCol="cat_index"),
            VectorAssembler(inputCols=["x1", "x2", "cat_index"], outputCol="features"),
            LogisticRegression(maxIter=20),
        ])
        model = pipeline.fit(frame)
        model.write().overwrite().save(str(out / "model"))
        scored = model.transform(spark.createDataFrame([(r["x1"], r["x2"], r["cat"]) for r in ROWS],
                                                       ["x1", "x2", "cat"])).collect()
        expected = [{"prediction": row["prediction"], "probability": row["probability"].toArray().tolist()}
                    for row in scored]
        (out / "expected.json").write_text(json.dumps({"rows": ROWS, "expected": expected,
                                                       "train_seconds": time.monotonic() - started}))
    finally:
        spark.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
