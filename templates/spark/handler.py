"""The ``spark`` template: serve a Spark ML ``PipelineModel`` saved by PySpark with ``model.write().save(path)``.

A replica owns one local SparkSession, created once in ``load`` with settings for a single small
process (one core, no UI, one shuffle partition, no event log, quiet logs), because a function replica
is one small process beside many others, not a cluster driver. Requests become tiny local DataFrames:
Spark ML's ``transform`` is the only way to get exactly the predictions the model gives in Spark, so
the model is never re-implemented outside Spark.

Input is a list of records (one per DataFrame row), one record, or a columnar object. The schema
comes from the declared signature when there is one (exact types), otherwise the model's input
columns are read from its stages and their types inferred from the JSON values; either way a
missing column or a value of the wrong type is a 400 naming the column, checked before Spark runs.

Options (``options:`` in stack.yml, declared in template.yml):

* ``outputs``: which columns to return: a list of column names, or a mapping output name ->
  column name | ``label`` (the prediction column) | ``proba`` (the probability vector) |
  ``proba:<class>`` (one class's probability, by index or by the label a StringIndexer gave it).
  Default: the outputs the signature declares (an output named after a column is that column; else
  by dtype and shape, as in sdk.outputs: a single output or a non-float one is the prediction, a float
  ``[-1, k]`` the probability vector, a float scalar of a binary classifier the positive class's
  probability; each cast to its declared dtype), else ``prediction``, and ``probability`` as a list
  when the model has one.
* ``master`` (default ``local[1]``), ``driver_memory`` (default ``512m``), ``spark_conf`` (extra
  Spark settings, a mapping) - for the rare model that needs more than one small process.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.errors import ConfigError, ValidationError, require_extra
from hydro_serving.sdk import LoadContext, ModelHandler
from hydro_serving.sdk.outputs import FLOAT_DTYPES
from hydro_serving.sdk.tabular import cast_output
from hydro_serving.templates import Template

log = logging.getLogger("hydro.template.spark")

# Stage parameters naming the columns a stage reads and the ones it writes.
_INPUT_PARAMS = ("inputCol", "inputCols", "featuresCol", "userCol", "itemCol")
_OUTPUT_PARAMS = ("outputCol", "outputCols", "predictionCol", "probabilityCol", "rawPredictionCol", "varianceCol",
                  "leafCol")
# Stages whose input columns must be numeric (or vectors), and those that need text.
_NUMERIC_STAGES = frozenset({"VectorAssembler", "Bucketizer", "ImputerModel", "OneHotEncoderModel", "Interaction",
                             "Binarizer", "VectorSizeHint"})
_TEXT_STAGES = frozenset({"Tokenizer", "RegexTokenizer"})

DEFAULT_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.eventLog.enabled": "false",
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "1",
    "spark.sql.adaptive.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.session.timeZone": "UTC",
    "spark.log.level": "ERROR",
    "spark.driver.extraJavaOptions": "-XX:+UseSerialGC -XX:TieredStopAtLevel=1",
}


def _columns_module() -> Any:
    """``columns.py`` beside this file (records <-> column checks), imported by path like the handler itself."""
    name = "_hydro_spark_columns"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("columns.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def find_model_root(path: Path) -> Path:
    """The folder holding ``metadata/`` and ``stages/``: the model path, a subfolder, or (for a path to one of
    the model's files, e.g. ``metadata/_SUCCESS``) the nearest parent."""
    if (path / "metadata").is_dir() and (path / "stages").is_dir():
        return path
    if path.is_file():
        for parent in list(path.parents)[:3]:
            if (parent / "metadata").is_dir() and (parent / "stages").is_dir():
                return parent
    if path.is_dir():
        subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for sub in subdirs:
            if (sub / "metadata").is_dir() and (sub / "stages").is_dir():
                return sub
    raise ConfigError(f"{path} is not a Spark ML PipelineModel folder (saved with model.write().save(path): "
                      "it must hold metadata/ and stages/)", field="model")


def build_session(options: Mapping[str, Any]) -> Any:
    """One local SparkSession for this process, sized for a function replica rather than a cluster."""
    require_extra("pyspark", "spark")
    from pyspark.sql import SparkSession

    extra = options.get("spark_conf") or {}
    if not isinstance(extra, Mapping):
        raise ConfigError("options.spark_conf must be a mapping of Spark settings", field="options.spark_conf")
    warehouse = Path(tempfile.gettempdir()) / f"hydro-spark-warehouse-{os.getpid()}"
    builder = (SparkSession.builder.master(str(options.get("master", "local[1]")))
               .appName(f"hydro-{os.environ.get('HYDRO_FUNCTION_NAME', 'spark')}"))
    conf = {**DEFAULT_CONF, "spark.driver.memory": str(options.get("driver_memory", "512m")),
            "spark.sql.warehouse.dir": str(warehouse), **{str(k): str(v) for k, v in extra.items()}}
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def flatten_stages(model: Any) -> list[Any]:
    """Every transformer of a PipelineModel in order, nested PipelineModels unrolled."""
    out = []
    for stage in getattr(model, "stages", [model]):
        if hasattr(stage, "stages"):
            out.extend(flatten_stages(stage))
        else:
            out.append(stage)
    return out


def _param_columns(stage: Any, names: tuple[str, ...]) -> list[str]:
    cols: list[str] = []
    for name in names:
        if not stage.hasParam(name):
            continue
        param = stage.getParam(name)
        if not stage.isDefined(param):
            continue
        value = stage.getOrDefault(param)
        if isinstance(value, str) and value:
            cols.append(value)
        elif isinstance(value, list | tuple):
            cols.extend(str(v) for v in value)
    return cols


def pipeline_columns(stages: list[Any]) -> tuple[list[str], set[str], dict[str, str]]:
    """``(inputs, produced, needs)``: the columns a request must bring (in first-use order), the columns the
    pipeline writes, and for inputs that need a kind of value, ``numeric`` or ``text``."""
    inputs: list[str] = []
    produced: set[str] = set()
    needs: dict[str, str] = {}
    for stage in stages:
        kind = type(stage).__name__
        reads = _param_columns(stage, _INPUT_PARAMS)
        if kind == "RFormulaModel":  # RFormula writes featuresCol/labelCol and reads what its formula says
            produced.update(_param_columns(stage, ("featuresCol", "labelCol")))
            continue
        for col in reads:
            if col not in produced and col not in inputs:
                inputs.append(col)
                if kind in _NUMERIC_STAGES:
                    needs[col] = "numeric"
                elif kind in _TEXT_STAGES:
                    needs[col] = "text"
        produced.update(_param_columns(stage, _OUTPUT_PARAMS))
    return inputs, produced, needs


def value_rules(stages: list[Any], inputs: list[str]) -> tuple[dict[str, set[str]], set[str]]:
    """What the pipeline refuses at run time, so it can be refused first with a 400 naming the column:
    categories a StringIndexer never saw (``handleInvalid=error``), and nulls a VectorAssembler cannot take."""
    categories: dict[str, set[str]] = {}
    not_null: set[str] = set()
    for stage in stages:
        kind = type(stage).__name__
        strict = not stage.hasParam("handleInvalid") or stage.getOrDefault("handleInvalid") == "error"
        if not strict:
            continue
        reads = [c for c in _param_columns(stage, ("inputCol", "inputCols")) if c in inputs]
        if kind == "StringIndexerModel":
            for col, labels in zip(reads, stage.labelsArray, strict=False):
                categories[col] = set(labels)
        elif kind == "VectorAssembler":
            not_null.update(reads)
    return categories, not_null


def _last_with(stages: list[Any], param: str) -> Any | None:
    for stage in reversed(stages):
        if stage.hasParam(param) and stage.isDefined(stage.getParam(param)):
            return stage
    return None


class SparkModel(ModelHandler):
    """A Spark ML PipelineModel behind the model-handler interface (``load``, ``predict``, ``infer_v2``)."""

    def __init__(self) -> None:
        self.session: Any = None
        self.model: Any = None
        self.columns: Any = None
        self.inputs: list[str] = []
        self.needs: dict[str, str] = {}
        self.schema_fields: dict[str, Any] = {}  # column -> Spark DataType, from the signature
        self.outputs: dict[str, tuple[str, int | None]] = {}  # output name -> (column, vector index | None)
        self.signature: Signature | None = None
        self.declared: Signature | None = None  # set when the signature's declared outputs are the answer
        self.vector_columns: frozenset[str] = frozenset()
        self.categories: dict[str, set[str]] = {}
        self.not_null: set[str] = set()
        self._lock = threading.Lock()

    # ---- loading -------------------------------------------------------------------------------------

    def locate_model(self, model_dir: Path, template: Template) -> Path:
        """A PipelineModel is a folder (``metadata/`` and ``stages/``), not one file."""
        return find_model_root(model_dir)

    def load_model(self, root: Path, context: LoadContext) -> None:
        self.columns = _columns_module()
        options = context.options
        self.session = build_session(options)
        from pyspark.ml import PipelineModel

        try:
            self.model = PipelineModel.load(str(root))
        except Exception as exc:
            raise ConfigError(f"cannot load the Spark PipelineModel at {root}: {exc}".splitlines()[0],
                              field="model") from exc
        stages = flatten_stages(self.model)
        inputs, produced, self.needs = pipeline_columns(stages)
        self.categories, self.not_null = value_rules(stages, inputs)
        self.signature = context.spec.signature if context.spec.signature and context.spec.signature.inputs else None
        if self.signature is not None:
            self.inputs = self.signature.input_names
            self.schema_fields = {f.name: self.columns.spark_type(f.dtype, f.row_shape, f.name)
                                  for f in self.signature.inputs}
            self.vector_columns = frozenset(f.name for f in self.signature.inputs if f.row_shape)
        else:
            self.inputs = inputs
        if not self.inputs:
            raise ConfigError("cannot tell which columns this PipelineModel reads: declare a signature with its "
                              "inputs", field="signature")
        declared = context.spec.signature
        if options.get("outputs") is None and declared is not None and declared.outputs:
            self.declared = declared
            self.outputs = self._declared_outputs(declared, stages, produced)
        else:
            self.outputs = self._choose_outputs(options.get("outputs"), stages, produced)
        self._warm_up()
        log.info("spark model %s: inputs %s, outputs %s", root, self.inputs, list(self.outputs))

    def _choose_outputs(self, raw: Any, stages: list[Any], produced: set[str]) -> dict[str, tuple[str, int | None]]:
        predictor = _last_with(stages, "predictionCol")
        prediction = predictor.getOrDefault("predictionCol") if predictor is not None else "prediction"
        proba_stage = _last_with(stages, "probabilityCol")
        probability = proba_stage.getOrDefault("probabilityCol") if proba_stage is not None else None
        if raw is None:
            out: dict[str, tuple[str, int | None]] = {}
            if prediction in produced:
                out[prediction] = (prediction, None)
            if probability and probability in produced:
                out[probability] = (probability, None)
            if not out:
                raise ConfigError("this PipelineModel has no prediction column: choose columns with options.outputs",
                                  field="options.outputs")
            return out
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list):
            raw = {str(name): str(name) for name in raw}
        if not isinstance(raw, Mapping) or not raw:
            raise ConfigError("options.outputs must be a list of column names or a mapping of output name to "
                              "column, label, proba or proba:<class>", field="options.outputs")
        labels = self._class_labels(stages, predictor)
        out = {}
        for name, spec in raw.items():
            where = f"options.outputs.{name}"
            spec = str(spec)
            if spec == "label":
                out[str(name)] = (prediction, None)
            elif spec == "proba" or spec.startswith("proba:"):
                if not probability:
                    raise ConfigError(f"{where}: this model gives no probabilities", field=where)
                if spec == "proba":
                    out[str(name)] = (probability, None)
                else:
                    out[str(name)] = (probability, self._class_index(spec[6:], labels, where))
            elif spec in produced or spec in self.inputs:
                out[str(name)] = (spec, None)
            else:
                known = ", ".join(sorted(produced | set(self.inputs)))
                raise ConfigError(f"{where}: no column '{spec}' in this pipeline (columns: {known})", field=where)
        return out

    def _declared_outputs(self, declared: Signature, stages: list[Any],
                          produced: set[str]) -> dict[str, tuple[str, int | None]]:
        """The signature's declared outputs onto the pipeline's columns (README "What is advertised is
        what is returned"): by name, else by dtype and shape; one that fits none fails the load naming it."""
        predictor = _last_with(stages, "predictionCol")
        prediction = predictor.getOrDefault("predictionCol") if predictor is not None else "prediction"
        proba_stage = _last_with(stages, "probabilityCol")
        probability = proba_stage.getOrDefault("probabilityCol") if proba_stage is not None else None
        probability = probability if probability in produced else None
        binary = getattr(proba_stage, "numClasses", None) == 2
        fields = list(declared.outputs)
        plan: dict[str, tuple[str, int | None]] = {}
        for i, fld in enumerate(fields):
            floating, row = fld.dtype in FLOAT_DTYPES, fld.row_shape
            if fld.name in produced or fld.name in self.inputs:
                plan[fld.name] = (fld.name, None)
            elif prediction in produced and (len(fields) == 1 or (not floating and row in (None, ()))):
                plan[fld.name] = (prediction, None)
            elif floating and row is not None and len(row) == 1 and probability:
                plan[fld.name] = (probability, None)
            elif floating and row in (None, ()) and probability and binary:
                plan[fld.name] = (probability, 1)
            elif floating and row in (None, ()) and not probability and prediction in produced:
                plan[fld.name] = (prediction, None)
            else:
                raise ConfigError(f"signature.outputs[{i}] ({fld.name}): cannot tell which column of the pipeline "
                                  f"this is; map it in options.outputs ({{{fld.name}: <column> | label | proba | "
                                  f"proba:<class>}})", field=f"signature.outputs[{i}]")
        return plan

    @staticmethod
    def _class_labels(stages: list[Any], predictor: Any) -> list[str]:
        """The labels a StringIndexer turned into the predictor's class indices, when the pipeline has one."""
        if predictor is None or not predictor.hasParam("labelCol"):
            return []
        label_col = predictor.getOrDefault("labelCol")
        for stage in stages:
            if type(stage).__name__ == "StringIndexerModel" and label_col in _param_columns(stage, ("outputCol",)):
                return [str(v) for v in stage.labels]
        return []

    @staticmethod
    def _class_index(key: str, labels: list[str], where: str) -> int:
        if key in labels:
            return labels.index(key)
        try:
            return int(key)
        except ValueError:
            raise ConfigError(f"{where}: unknown class '{key}' (classes: {', '.join(labels) or 'indices 0..k-1'})",
                              field=where) from None

    def _warm_up(self) -> None:
        """Run the pipeline once on a made-up row so the first request does not pay for planning and codegen.

        The row uses a known category for indexed columns and 0 for numeric ones; when a column's kind
        is unknown (no signature) there is no safe row, and the first request warms the pipeline up.
        """
        record: dict[str, Any] = {}
        for col in self.inputs:
            spark_type = self.schema_fields.get(col)
            if col in self.categories:
                record[col] = next(iter(self.categories[col]))
            elif spark_type is not None and spark_type.typeName() in ("string", "array"):
                record[col] = "" if spark_type.typeName() == "string" else [""]
            elif spark_type is not None and spark_type.typeName() == "boolean":
                record[col] = False
            elif spark_type is not None and spark_type.typeName() == "vector":
                return  # its size is unknown
            elif spark_type is not None or self.needs.get(col) == "numeric":
                record[col] = 0.0
            else:
                return
        try:
            self._run([("", record)])
        except Exception as exc:  # a warm-up is an optimisation; the model is loaded either way
            log.info("spark warm-up skipped: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    # ---- serving -------------------------------------------------------------------------------------

    def predict(self, payload: Any) -> list[dict[str, Any]]:
        """Records in, one record of the chosen output columns per input record out."""
        records = self.columns.records_from_payload(payload, self.inputs, self.vector_columns)
        rows = self._run(records)
        if self.declared is not None:
            columns = self._declared_columns(rows)
            return [dict(zip(columns, values, strict=True))
                    for values in zip(*(c.tolist() for c in columns.values()), strict=True)]
        return [{name: self.columns.to_json(self._pick(row, col, idx)) for name, (col, idx) in self.outputs.items()}
                for row in rows]

    def infer_v2(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """V2 tensors by column name (first dimension = rows) in, one tensor per output out."""
        import numpy as np

        records = self.columns.records_from_arrays(arrays, self.inputs)
        rows = self._run(records)
        if self.declared is not None:
            return self._declared_columns(rows)
        out = {}
        for name, (col, idx) in self.outputs.items():
            values = [self.columns.to_json(self._pick(row, col, idx)) for row in rows]
            out[name] = np.array(values, dtype=object if values and isinstance(values[0], str) else None)
        return out

    def _declared_columns(self, rows: list[Any]) -> dict[str, Any]:
        """``{declared output: array with one entry per row}``, each cast to the dtype the signature declares."""
        import numpy as np

        out = {}
        for name, (col, idx) in self.outputs.items():
            values = [self.columns.to_json(self._pick(row, col, idx)) for row in rows]
            array = np.array(values, dtype=object if values and isinstance(values[0], str) else None)
            out[name] = cast_output(name, array, self.declared)
        return out

    @staticmethod
    def _pick(row: Any, column: str, index: int | None) -> Any:
        value = row[column]
        if index is None:
            return value
        return None if value is None else float(value[index])

    def _run(self, records: list[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        from pyspark.sql.types import StructField, StructType

        columns = self.columns
        wanted = [c for c in dict.fromkeys(c for c, _ in self.outputs.values())]
        passthrough = [c for c in wanted if c not in self.inputs and all(c in r for _, r in records)]
        if self.schema_fields:
            if self.signature is not None:
                for prefix, record in records:
                    self.signature.validate_record(record, prefix=prefix)
            types = dict(self.schema_fields)
        else:
            types = {c: columns.infer_type(records, c, self.needs.get(c)) for c in self.inputs}
        for col in passthrough:
            types[col] = columns.infer_type(records, col, None)
        columns.check_values(records, self.categories, self.not_null)
        names = list(types)
        rows = [tuple(columns.to_spark_value(record.get(c), types[c]) for c in names) for _, record in records]
        schema = StructType([StructField(c, types[c], True) for c in names])
        try:
            frame = self.session.createDataFrame(rows, schema, verifySchema=False)
            return self.model.transform(frame).select(*wanted).collect()
        except ValidationError:
            raise
        except Exception as exc:
            error = columns.caller_error(exc, names)
            if error is None:
                raise
            raise error from None

    def close(self) -> None:
        """Stop the JVM with the replica (it would also exit when this process's pipe to it closes)."""
        with self._lock:
            if self.session is not None:
                self.session.stop()
                self.session = None

