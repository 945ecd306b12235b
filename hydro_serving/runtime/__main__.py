"""``python -m hydro_serving.runtime --spec SPEC.json --port N``: the process inside every function replica.

Flags win over the environment (``HYDRO_FUNCTION_SPEC``, ``HYDRO_PORT``, ``HYDRO_HOST``,
``HYDRO_UNIX_SOCKET``, ``HYDRO_WORKERS``, ``HYDRO_THREADS``) so one image serves under any supervisor: the gateway's
local provider passes flags, a container passes environment.

Without ``--workers``/``HYDRO_WORKERS`` the template decides (:func:`server.default_workers`:
``min(2, cpus)`` for model templates, 1 for spark, tensorflow, routers and custom functions);
without ``--threads``/``HYDRO_THREADS``, 8 threads for one worker and 4 per worker otherwise, and at
least ``batching.max_batch_size`` per worker when the function batches.
"""

from __future__ import annotations

import argparse
import os
import sys

from hydro_serving.errors import HydroError
from hydro_serving.runtime.server import default_threads, default_workers, read_spec, serve
from hydro_serving.templates import get_template


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        sys.exit(f"error: {name} must be an integer, got {raw!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hydro_serving.runtime",
                                     description="Serve one Hydro Serving function (the runtime server).")
    parser.add_argument("--spec", default=os.environ.get("HYDRO_FUNCTION_SPEC"),
                        help="function spec JSON (FunctionSpec.to_dict()); env HYDRO_FUNCTION_SPEC")
    parser.add_argument("--host", default=os.environ.get("HYDRO_HOST", "127.0.0.1"), help="env HYDRO_HOST")
    parser.add_argument("--port", type=int, default=_env_int("HYDRO_PORT", 8080), help="env HYDRO_PORT")
    parser.add_argument("--unix-socket", default=os.environ.get("HYDRO_UNIX_SOCKET") or None, metavar="PATH",
                        help="listen on this unix socket instead of --host/--port; env HYDRO_UNIX_SOCKET")
    parser.add_argument("--workers", type=int, default=_env_int("HYDRO_WORKERS", 0) or None,
                        help="env HYDRO_WORKERS (default: min(2, cpus) for model templates, else 1)")
    parser.add_argument("--threads", type=int, default=_env_int("HYDRO_THREADS", 0) or None,
                        help="env HYDRO_THREADS (default: 8 for one worker, 4 per worker for more)")
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    if not args.spec:
        parser.error("--spec (or HYDRO_FUNCTION_SPEC) is required")

    try:
        spec = read_spec(args.spec)
        template = get_template(spec.lang)
        workers = args.workers if args.workers is not None else default_workers(template)
        threads = args.threads if args.threads is not None else default_threads(workers, spec)
        serve(spec, args.host, args.port, workers, threads, args.access_log, args.unix_socket, template=template)
    except HydroError as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"error: {exc.message}{where}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
