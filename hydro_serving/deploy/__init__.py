"""Deploying a stack straight to a platform that scales functions itself (Knative), for the CLI.

Not a gateway provider: the gateway runs and scales replicas; here the platform does, and the
CLI only applies, lists, describes and removes its objects (``hydro deploy --provider knative``).
"""
