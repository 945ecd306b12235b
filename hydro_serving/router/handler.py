"""The router template's handler class: the runtime loads it once and calls it per request.

It is the seam between the runtime (HTTP, limits, errors) and the engine (the pipeline): it reads
the gateway's address from ``HYDRO_GATEWAY_URL`` (any URL the transport seam knows) and
``HYDRO_ROUTER_DIRECT`` when it loads (never at import), builds one
:class:`Router` for the replica, and turns each :class:`InvocationContext` into a pipeline run
whose last stage's bytes go back untouched as a :class:`RawResponse`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydro_serving.errors import ConfigError
from hydro_serving.replica import contract
from hydro_serving.sdk import FunctionHandler, InvocationContext, LoadContext, RawResponse

GATEWAY_ENV = contract.GATEWAY_URL_ENV
DIRECT_ENV = contract.ROUTER_DIRECT_ENV  # "1" from the local provider: stage replicas run on this machine
STAGE_URL_ENV = contract.HYDRO_STAGE_URL_TEMPLATE  # on Knative: http://{name}.<namespace>.svc.cluster.local


class RouterHandler(FunctionHandler):
    """``load(model_dir, context)`` once; ``handle(payload, context)`` per request (kind: router)."""

    def __init__(self) -> None:
        self.router: Any = None

    def load(self, model_dir: Path | None, context: LoadContext) -> None:
        from hydro_serving.router.engine import Router

        spec = context.spec
        if not spec.chain:
            raise ConfigError(f"function '{spec.name}' uses the router template but has no chain", field="chain",
                              function=spec.name)
        # a gateway beside it that listens on a unix socket names it here (http+unix://): the same gateway, fewer layers
        gateway = (os.environ.get(contract.GATEWAY_TRANSPORT_ENV, "").strip()
                   or os.environ.get(GATEWAY_ENV, "").strip())
        template = os.environ.get(STAGE_URL_ENV, "").strip() or None
        if template is not None and "{name}" not in template:
            raise ConfigError(f"{STAGE_URL_ENV} must contain {{name}}, got {template!r}", field=STAGE_URL_ENV,
                              function=spec.name)
        if not gateway and template is None:
            raise ConfigError(f"router '{spec.name}' needs {GATEWAY_ENV} (the gateway that runs its stages) "
                              f"or {STAGE_URL_ENV} (stage URLs on Knative)", field=GATEWAY_ENV, function=spec.name)
        # the runtime's registry when it offers one, so /metrics shows the per-stage series
        registry = getattr(context, "metrics_registry", None)
        # the local provider tells a router it runs beside its stages: it may then lease their replicas
        direct = os.environ.get(DIRECT_ENV, "").strip() == "1"
        self.router = Router(spec, gateway, registry=registry, stage_url_template=template, direct=direct)
        self.signature = self.router.signature  # stage 1's inputs, the last stage's outputs (V2 metadata)

    def handle(self, payload: Any, context: InvocationContext) -> RawResponse:
        body = context.body
        decoded = payload if isinstance(payload, Mapping | list) else None
        if not body and decoded is not None:  # a runtime that kept only the decoded payload
            import json

            body = json.dumps(decoded).encode()
        result = self.router.run(body, context.headers, deadline=context.deadline, payload=decoded)
        context.response_headers.update(result.headers)
        return RawResponse(body=result.body, status=result.status, content_type=result.content_type,
                           headers=dict(result.headers))

    def close(self) -> None:
        """Stop the router's background threads (shadows, prewarms) and its connection pool."""
        if self.router is not None:
            self.router.close()
