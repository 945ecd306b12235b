"""One client seam between callers of functions (router, stream worker) and what carries the call.

``open_transport(url)`` picks the transport by URL scheme; see :mod:`hydro_serving.transport.base`
for the contract and docs/ARCHITECTURE.md ("Add a transport") for adding one (NATS JetStream, Knative Eventing).
"""

from hydro_serving.transport.base import Reply, Transport, TransportError
from hydro_serving.transport.select import open_transport, register

__all__ = ["Reply", "Transport", "TransportError", "open_transport", "register"]
