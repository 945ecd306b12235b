"""The web UI: server-rendered pages of the gateway at ``/ui/``, behind the admin login.

Why inside the gateway: no second server to run, and every action goes through the same domain
objects (the :class:`~hydro_serving.gateway.core.Gateway`, the model store, the monitor) as the
HTTP API and the CLI, so validation and errors are theirs. The package is split by job:

* :mod:`.session`  admin login, session cookie, CSRF tokens, login rate limit;
* :mod:`.stats`    a sampler of the gateway's Prometheus series: 5-minute windows, sparklines, cold start split;
* :mod:`.svg`      inline SVG drawn on the server (sparklines, histograms, pipeline graphs);
* :mod:`.data`     what each screen shows, as plain dicts (shared by pages and SSE streams);
* :mod:`.views`    page and form handlers; :mod:`.sse` the live streams; :mod:`.mount` the routes.

Nothing here is built at import time: :func:`hydro_serving.ui.mount.mount` does it for one
application. This module imports nothing, so the submodules importing each other never cycle
through the package.
"""
