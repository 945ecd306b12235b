"""Train the three-framework product-matching pipeline's models and upload them to the store.

    python examples/multi-framework/train.py [--out DIR] [--no-upload] [--seed N]

The pipeline is Python -> Spark ML -> TensorFlow/Keras, the original Hydro Serving's promise of
chaining frameworks without rewriting models:

1. ``mf-features`` (python3): the demo's pair features (``functions/pm-features``, the same code the
   demo's sklearn classifier reads), 15 numbers per pair of listings;
2. ``mf-spark`` (spark): a Spark ML ``PipelineModel`` (VectorAssembler -> LogisticRegression) that
   scores each pair; it passes the features through and adds ``spark_score`` = P(match);
3. ``mf-keras`` (tensorflow): a small Keras network over the 15 features plus ``spark_score``
   (a stacked model) that answers ``probability`` and ``match``, the demo's answer format.

The data is the demo's generated catalog of product pairs (:mod:`hydro_serving.demo`), split by
product line so the reported accuracy is on products never seen in training. ``spark_score`` for
Keras' training rows comes from Spark scoring those same rows, exactly as it will at serving time.
Each model folder gets the signature it is uploaded with, so ``hydro deploy`` can check the chain.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SPARK_NAME = "mf-spark"
KERAS_NAME = "mf-keras"
SCORE = "spark_score"


def spark_signature(names: tuple[str, ...]) -> dict[str, Any]:
    """Features in; the same features plus ``spark_score`` out, so the next stage gets both."""
    fields = [{"name": n, "dtype": "float64", "shape": [-1]} for n in names]
    return {"inputs": fields, "outputs": [*fields, {"name": SCORE, "dtype": "float64", "shape": [-1]}]}


def keras_signature(names: tuple[str, ...]) -> dict[str, Any]:
    inputs = [{"name": n, "dtype": "float64", "shape": [-1]} for n in (*names, SCORE)]
    return {"inputs": inputs, "outputs": [{"name": "match", "dtype": "bool", "shape": [-1]},
                                          {"name": "probability", "dtype": "float64", "shape": [-1]}]}


def train_spark(names: tuple[str, ...], x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Fit and save the Spark pipeline; returns P(match) for the training and the test rows."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[1]").appName("hydro-mf-train")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.log.level", "ERROR").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    try:
        def frame(x: np.ndarray, y: np.ndarray | None = None) -> Any:
            rows = [tuple(float(v) for v in row) + ((float(y[i]),) if y is not None else ()) for i, row in enumerate(x)]
            return spark.createDataFrame(rows, [*names, "label"] if y is not None else list(names))

        pipeline = Pipeline(stages=[VectorAssembler(inputCols=list(names), outputCol="features"),
                                    LogisticRegression(maxIter=50, regParam=0.01)])
        model = pipeline.fit(frame(x_train, y_train))
        model.write().overwrite().save(str(out))

        def scores(x: np.ndarray) -> np.ndarray:
            rows = model.transform(frame(x)).select("probability").collect()
            return np.array([r["probability"][1] for r in rows])

        return scores(x_train), scores(x_test)
    finally:
        spark.stop()


def train_keras(x_train: np.ndarray, y_train: np.ndarray, seed: int, out: Path) -> Any:
    """A small network over features + spark_score; outputs ``probability`` and ``match`` (0/1)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(seed)
    normalize = keras.layers.Normalization(name="normalize")
    normalize.adapt(x_train.astype("float32"))
    inputs = keras.Input(shape=(x_train.shape[1],), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(normalize(inputs))
    probability = keras.layers.Dense(1, activation="sigmoid", name="probability")(hidden)
    match = keras.layers.Discretization(bin_boundaries=[0.5], name="match")(probability)
    model = keras.Model(inputs, [probability, match])
    trainer = keras.Model(inputs, probability)
    trainer.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    trainer.fit(x_train.astype("float32"), y_train.astype("float32"), epochs=30, batch_size=64, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    return model


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="where the model folders go (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-upload", action="store_true", help="train and save only")
    args = parser.parse_args(argv)
    from hydro_serving.demo.training import build_dataset

    out = args.out or Path(tempfile.mkdtemp(prefix="hydro-mf-"))
    data = build_dataset(args.seed)
    names = data.names
    spark_dir, keras_dir = out / SPARK_NAME, out / KERAS_NAME
    score_train, score_test = train_spark(names, data.x_train, data.y_train, data.x_test, spark_dir)
    x_train = np.column_stack([data.x_train, score_train])
    x_test = np.column_stack([data.x_test, score_test])
    model = train_keras(x_train, data.y_train, args.seed, keras_dir)
    probability = np.asarray(model.predict(x_test.astype("float32"), verbose=0)[0]).reshape(-1)
    metrics = {
        "spark_accuracy": float(np.mean((score_test > 0.5) == data.y_test)),
        "pipeline_accuracy": float(np.mean((probability > 0.5) == data.y_test)),
        "train_pairs": len(data.y_train), "test_pairs": len(data.y_test),
    }
    (spark_dir.parent / "metrics.json").write_text(json.dumps(metrics, indent=2))
    refs = {}
    if not args.no_upload:
        from hydro_serving.store import open_store

        store = open_store()
        for name, folder, signature in ((SPARK_NAME, spark_dir, spark_signature(names)),
                                        (KERAS_NAME, keras_dir / "model.keras", keras_signature(names))):
            manifest = store.upload(folder, name, signature=signature, metadata={"example": "multi-framework"})
            refs[name] = f"{name}:{manifest.version}"
    result = {"out": str(out), "metrics": metrics, "uploaded": refs}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
