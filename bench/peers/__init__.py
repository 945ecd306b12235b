"""Peer model servers (MLServer, BentoML, KServe, MLflow), each in a virtual environment of its own."""
