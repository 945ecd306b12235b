"""The gateway: the public HTTP API, providers that run replicas, and scale to zero (written once).

``create_app(config)`` builds the aiohttp application; ``run_gateway(config)`` serves it in the
foreground; ``GatewayClient`` is what the CLI (and ``hydro demo``/``hydro up``) talk through.
"""
