"""The router function: runs a pipeline spec (chain, weighted variants, shadows) through the gateway.

Submodules are imported by name (``hydro_serving.router.contracts``, ``...engine``) so that the
gateway can check contracts without importing the HTTP client side of the router.
"""
