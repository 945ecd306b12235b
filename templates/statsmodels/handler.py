"""The statsmodels template: a fitted regression's predictions, the smallest template on the sdk.

The model file is what ``results.save("model.pickle")`` writes for a model fitted with arrays
(``sm.OLS(y, sm.add_constant(X)).fit()``, GLM, Logit, ...). A request is records, one record, a
columnar object or rows of the model's regressors; the constant is added here, so callers send
only their features. A pickle is code: it is loaded only from a model version the store trusts.

Options (declared in template.yml): ``outputs`` - columns of ``get_prediction().summary_frame()``
(default: one predicted mean per row); ``alpha`` - for the intervals (default 0.05).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.contract.signature import Field
from hydro_serving.errors import ConfigError, require_extra
from hydro_serving.sdk import LoadContext, ModelHandler
from hydro_serving.sdk.outputs import render_answer
from hydro_serving.sdk.tabular import feature_order, table_from_json, to_matrix

CONSTANT_NAMES = ("const", "Intercept")


class StatsmodelsModel(ModelHandler):
    """One fitted results object, its regressors and the outputs chosen at load."""

    def load_model(self, path: Path, context: LoadContext) -> None:
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
        self.outputs = list(context.options.get("outputs") or [])
        self.alpha = float(context.options.get("alpha", 0.05))
        if context.spec.signature is None:
            self.signature = Signature(inputs=tuple(Field(n, "float64", (-1,)) for n in regressors))
        if self.outputs:  # a column this kind of model does not give is a load error, not a 500 per request
            import numpy as np

            have = set(self._frame(np.zeros((1, len(regressors)))).columns)
            missing = [o for o in self.outputs if o not in have]
            if missing:
                raise ConfigError(f"options.outputs: this model gives no '{missing[0]}' (it gives "
                                  f"{', '.join(sorted(have))})", field="options.outputs")

    def _exog(self, x: Any) -> Any:
        import numpy as np

        if self.constant is None:
            return x
        return np.insert(x, self.constant, 1.0, axis=1)

    def _frame(self, x: Any) -> Any:
        return self.results.get_prediction(self._exog(x)).summary_frame(alpha=self.alpha)

    def predict(self, payload: Any) -> Any:
        x = to_matrix(table_from_json(payload, self.features, len(self.features or []) or None))
        if not self.outputs:
            return render_answer({"mean": self.results.predict(self._exog(x))}, named=False)
        frame = self._frame(x)
        return render_answer({name: frame[name].to_numpy() for name in self.outputs}, named=True)
