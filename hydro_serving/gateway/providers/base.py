"""The provider interface: how replicas are started, stopped, watched and read, nothing more.

Scale to zero, autoscaling, draining, crash handling and readiness waiting live once in
:mod:`hydro_serving.gateway.scaler`; a provider only knows how to run one replica of a function
and where its endpoint is. A Docker provider runs containers, a Knative provider may report
``manages_scaling = True`` and hand back one stable service endpoint instead.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydro_serving.errors import UpstreamError
from hydro_serving.stack import FunctionSpec

_ids = itertools.count(1)


def next_replica_id(function: str) -> str:
    """A short id unique within this gateway process, readable in logs (``iris-3``)."""
    return f"{function}-{next(_ids)}"


@dataclass(eq=False)
class Replica:
    """One running copy of a function, as the scaler tracks it.

    ``info`` is the provider's own handle (pid, process group, container id); the scaler only
    reads ``endpoint`` and the bookkeeping fields.
    """

    id: str
    function: str
    endpoint: str  # base URL, e.g. http://127.0.0.1:41234 (on a unix socket: http://localhost, the Host it is sent)
    generation: int = 1
    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    state: str = "starting"  # starting -> ready -> draining -> stopped
    inflight: int = 0
    started_at: float = 0.0
    ready_at: float = 0.0
    last_used: float = 0.0
    socket: str | None = None  # a local replica's unix socket (the provider's choice); None: TCP to ``endpoint``
    session: Any = field(default=None, repr=False)  # the scaler's client session for this replica (gateway.upstream)
    client: Any = field(default=None, repr=False)  # the invocation hop's client (gateway.replicaclient), same owner
    leased_until: float = 0.0  # a router may call it directly until then (gateway/endpoints.py)
    direct_inflight: int = 0  # the most direct calls in flight a router reported since its last lease

    def describe(self) -> dict[str, Any]:
        out = {"id": self.id, "endpoint": self.endpoint, "pid": self.pid, "state": self.state,
               "generation": self.generation, "inflight": self.inflight}
        if self.socket is not None:
            out["socket"] = self.socket
        return out


class ReplicaStartError(UpstreamError):
    """A replica exited (or could not be spawned) while starting; the message quotes the cause."""


class Provider(abc.ABC):
    """Runs replicas of functions. Every method may be called from the gateway's event loop."""

    name: str = "abstract"
    manages_scaling: bool = False  # True when the platform (Knative) scales replicas itself
    # set by the gateway: variables it adds to a function's replicas (a router's own key, HYDRO_ROUTER_KEY)
    credentials: Callable[[str], Mapping[str, str]] | None = None

    def replica_credentials(self, name: str) -> dict[str, str]:
        """The gateway-minted variables for replicas of ``name`` (never stored in the spec or its files)."""
        return dict(self.credentials(name)) if self.credentials is not None else {}

    def check(self, spec: FunctionSpec) -> None:  # noqa: B027 - optional hook
        """Raise a 400 (naming the field) when this provider cannot run ``spec``; default: anything goes."""

    async def deploy(self, spec: FunctionSpec, generation: int) -> None:  # noqa: B027 - optional hook
        """Prepare whatever replicas of ``spec`` need (spec files, images, services). Idempotent."""

    async def remove(self, name: str) -> None:  # noqa: B027 - optional hook
        """Forget a removed function's files/services; its replicas are already stopped."""

    @abc.abstractmethod
    async def start_replica(self, spec: FunctionSpec, generation: int) -> Replica:
        """Spawn one replica and return at once (not ready yet); the scaler polls its readiness.

        This is the one start path, so a faster spawner (a pre-forked template) slots in here.
        """

    @abc.abstractmethod
    async def stop_replica(self, replica: Replica, grace: float) -> None:
        """Stop gracefully (SIGTERM or equivalent), then force after ``grace`` seconds; wait for the end."""

    @abc.abstractmethod
    def is_alive(self, replica: Replica) -> bool:
        """Cheap check that the replica's process/container still runs."""

    @abc.abstractmethod
    async def wait_exit(self, replica: Replica) -> int | None:
        """Complete when the replica exits, with its exit code when known (crash detection)."""

    def exit_cause(self, replica: Replica) -> str:
        """A one-line reason for an unexpected exit (the last error line of its log), for error bodies."""
        return "the replica exited"

    @abc.abstractmethod
    def logs(self, name: str, tail: int | None = None, follow: bool = False) -> AsyncIterator[str]:
        """Lines of the function's log (the last ``tail`` ones); with ``follow``, keep yielding new lines."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release provider resources at gateway shutdown (replicas are stopped by the scaler first)."""
