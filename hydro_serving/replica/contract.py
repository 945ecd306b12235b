"""Names that the gateway, the router, the runtime and every provider must spell the same way.

Kept in one module so a renamed header or variable is renamed everywhere at once; nothing here
does anything.
"""

from __future__ import annotations

# ---- headers ---------------------------------------------------------------------------------------
PREWARM_HEADER = "X-Hydro-Prewarm"
STAGE_HEADER = "X-Hydro-Stage"
PIPELINE_HEADER = "X-Hydro-Pipeline"
SHADOW_HEADER = "X-Hydro-Shadow"
TIMINGS_HEADER = "X-Hydro-Stage-Timings"
KEY_HEADER = "x-hydro-key"
READY_HEADER = "X-Hydro-Ready"
# a router's endpoint lease of one of its stages (POST /function/<stage> with this header: see
# hydro_serving.router.direct and hydro_serving.gateway.endpoints)
ENDPOINTS_HEADER = "X-Hydro-Endpoints"

# ---- what a replica is told (set by the provider, read by the runtime) ---------------------------
FUNCTION_NAME_ENV = "HYDRO_FUNCTION_NAME"
FUNCTION_SPEC_ENV = "HYDRO_FUNCTION_SPEC"
GATEWAY_URL_ENV = "HYDRO_GATEWAY_URL"
HYDRO_STAGE_URL_TEMPLATE = "HYDRO_STAGE_URL_TEMPLATE"  # on Knative: http://{name}.<namespace>.svc.cluster.local
# a local router's way to its gateway when the gateway also listens on a unix socket: an http+unix:// URL
# for hydro_serving.transport.open_transport (HYDRO_GATEWAY_URL stays the TCP one)
GATEWAY_TRANSPORT_ENV = "HYDRO_GATEWAY_TRANSPORT"
SECRETS_DIR_ENV = "HYDRO_SECRETS_DIR"
HOST_ENV = "HYDRO_HOST"
PORT_ENV = "HYDRO_PORT"
STORE_ENV = "HYDRO_STORE"
CACHE_ENV = "HYDRO_CACHE"
# platform variables other parts add through replica_environment(platform=...)
MODEL_PIN_ENV = "HYDRO_MODEL_PIN"
TRUSTED_KEYS_ENV = "HYDRO_TRUSTED_KEYS"
ROUTER_KEY_ENV = "HYDRO_ROUTER_KEY"
ROUTER_DIRECT_ENV = "HYDRO_ROUTER_DIRECT"  # "1": the router runs beside its stages and may lease their endpoints

# runtime limits an operator may set on the gateway for every replica (passed through as they are)
RUNTIME_LIMIT_ENVS = ("HYDRO_TIMEOUT", "HYDRO_MAX_BODY_BYTES", "HYDRO_MAX_INFLIGHT", "HYDRO_LOAD_FAILURE_EXIT",
                      "HYDRO_WORKERS", "HYDRO_THREADS", "HYDRO_LOG_LEVEL", "HYDRO_LOAD_BEFORE_FORK")

# ---- the store, as a replica needs it to fetch its model -----------------------------------------
# Settings (never secret), passed from the operator's environment as they are.
STORE_SETTING_ENVS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
# Read-only credentials for replicas: the operator sets HYDRO_REPLICA_AWS_* on the gateway and a
# replica receives them as AWS_* (the gateway's own AWS_ACCESS_KEY_ID never reaches a replica).
REPLICA_CREDENTIAL_PREFIX = "HYDRO_REPLICA_"
REPLICA_CREDENTIAL_ENVS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

# ---- the gateway's own settings for sandboxing local replicas ------------------------------------
SANDBOX_ENV = "HYDRO_SANDBOX"  # auto (default) | uid | userns | off
REPLICA_UIDS_ENV = "HYDRO_REPLICA_UIDS"  # e.g. 800000-865535: per-function uids when the gateway is root
REPLICA_TRANSPORT_ENV = "HYDRO_REPLICA_TRANSPORT"  # unix (default on Linux) | tcp: how the gateway reaches replicas

# ---- conventions of images (docker, Knative) -------------------------------------------------------
CONTAINER_PORT = 8080
CONTAINER_SECRETS_DIR = "/var/openfaas/secrets"
CONTAINER_HOME = "/home/app"
