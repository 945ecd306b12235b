"""The statsmodels template: a fitted regression's predictions, the smallest template on the sdk.

The model file is what ``results.save("model.pickle")`` writes for a model fitted with arrays
(``sm.OLS(y, sm.add_constant(X)).fit()``, GLM, Logit, ...). A request is records, one record, a
columnar object or rows of the model's regressors; the constant is added here, so callers send
only their features. A pickle is code: it is loaded only from a model version the store trusts.

Options (declared in template.yml): ``outputs`` - columns of ``get_prediction().summary_frame()``
(default: the outputs the signature declares, else one predicted mean per row); ``alpha`` - for the
intervals (default 0.05).

Declared outputs without ``options.outputs`` are the answer (README "What is advertised is what is
returned"): an output named after a column of the summary frame is that column, a single other
output is the predicted mean; anything else fails the load naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.contract.signature import Field
from hydro_serving.errors import ConfigError, require_extra
from hydro_serving.sdk import LoadContext, ModelHandler
from hydro_serving.sdk.outputs import render_answer
from hydro_serving.sdk.tabular import cast_output, feature_order, table_from_json, to_matrix

CONSTANT_NAMES = ("const", "Intercept")


def declared_columns(declared: Signature | None, have: set[str]) -> dict[str, str]:
    """``{output name: summary-frame column}`` for the outputs a signature declares ({} when none).

    By name when the output is a column; a single declared output is the predicted mean whatever
    its name. Anything else cannot be told apart, so it is a load error naming the output.
    """
    fields = list(declared.outputs) if declared is not None else []
    plan: dict[str, str] = {}
    for i, fld in enumerate(fields):
        if fld.name in have:
            plan[fld.name] = fld.name
        elif len(fields) == 1:
            plan[fld.name] = "mean"
        else:
            raise ConfigError(f"signature.outputs[{i}] ({fld.name}): not a column of this model's predictions "
                              f"({', '.join(sorted(have))}); name it after one or map it in options.outputs",
                              field=f"signature.outputs[{i}]")
    return plan


class StatsmodelsModel(ModelHandler):
    """One fitted results object, its regressors and the outputs chosen at load."""

    def load_model(self, path: Path, context: LoadContext) -> None:
        import numpy as np

        require_extra("statsmodels.api", "statsmodels")
        from statsmodels.iolib.smpickle import load_pickle

        self.results = load_pickle(path)
        model = self.results.model
        if getattr(model, "formula", None) is not None:
            raise ConfigError("formula models are not served: fit with arrays, e.g. sm.OLS(y, sm.add_constant(X))",
                              field="model")
        names = [str(n) for n in model.exog_names]
        self.constant = next((i for i, n in enumerate(names) if n in CONSTANT_NAMES), None)
        regressors = [n for i, n in enumerate(names) if i != self.constant]
        self.features = feature_order(context.spec.signature, regressors)
        self.alpha = float(context.options.get("alpha", 0.05))
        self.declared = context.spec.signature
        if context.spec.signature is None:
            self.signature = Signature(inputs=tuple(Field(n, "float64", (-1,)) for n in regressors))
        chosen = list(context.options.get("outputs") or [])
        if not chosen and not (self.declared is not None and self.declared.outputs):
            self.outputs: dict[str, str] = {}
            return
        have = set(self._frame(np.zeros((1, len(regressors)))).columns)
        missing = [o for o in chosen if o not in have]
        if missing:  # a column this kind of model does not give is a load error, not a 500 per request
            raise ConfigError(f"options.outputs: this model gives no '{missing[0]}' (it gives "
                              f"{', '.join(sorted(have))})", field="options.outputs")
        self.outputs = {c: c for c in chosen} if chosen else declared_columns(self.declared, have)

    def _exog(self, x: Any) -> Any:
        import numpy as np

        if self.constant is None:
            return x
        return np.insert(x, self.constant, 1.0, axis=1)

    def _frame(self, x: Any) -> Any:
        return self.results.get_prediction(self._exog(x)).summary_frame(alpha=self.alpha)

    def _matrix(self, payload: Any) -> Any:
        return to_matrix(table_from_json(payload, self.features, len(self.features or []) or None))

    def _columns(self, x: Any) -> dict[str, Any]:
        """``{output name: one value per row}``: the chosen columns (cast as declared), else the mean alone."""
        if not self.outputs:
            return {"mean": self.results.predict(self._exog(x))}
        frame = self._frame(x)
        return {name: cast_output(name, frame[column].to_numpy(), self.declared)
                for name, column in self.outputs.items()}

    def predict(self, payload: Any) -> Any:
        return render_answer(self._columns(self._matrix(payload)), named=bool(self.outputs))

    def infer_v2(self, arrays: Any) -> dict[str, Any]:
        """One tensor per chosen output (the declared ones), else the default single ``predict`` tensor."""
        if not self.outputs:
            return super().infer_v2(arrays)
        return self._columns(self._matrix({name: array.tolist() for name, array in arrays.items()}))
