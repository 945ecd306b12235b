"""Periodic model discovery: files dropped into the store by other tools become versions on their own.

Data scientists often copy a model with ``aws s3 cp`` instead of ``hydro model upload``; the store's
:meth:`~hydro_serving.store.ModelStore.discover` turns such files into verified versions. The gateway
runs it every ``interval`` seconds in a thread (boto3 is blocking). A drop becomes a version only
once two passes at least ``min_age`` apart saw the same files (names, sizes, ETags) and no
multipart upload is in progress under it, so an upload still in progress is never taken
half-written; the record of what a pass saw lives in the store, so two gateways agree. Pickle-based
files are code and are left alone unless ``allow_unsafe`` (``--discover-unsafe-formats``). A store
that cannot be reached is logged once per outage, never raised: the gateway keeps serving what it has.
"""

from __future__ import annotations

import asyncio
import logging

from hydro_serving.errors import HydroError

log = logging.getLogger("hydro.gateway")

MIN_AGE_SECONDS = 30.0


class DiscoveryLoop:
    """Calls ``open_store(url).discover(min_age)`` every ``interval`` seconds until cancelled."""

    def __init__(self, interval: float, store_url: str | None = None, min_age: float | None = None,
                 allow_unsafe: bool = False) -> None:
        self.interval = interval
        self.store_url = store_url
        # two passes must see the same files min_age apart: one interval, at most MIN_AGE_SECONDS
        self.min_age = min(MIN_AGE_SECONDS, interval) if min_age is None else min_age
        self.allow_unsafe = allow_unsafe
        self._reported: set[str] = set()  # unservable groups already logged (each is logged once)
        self.runs = 0
        self._failing = False

    def discover_once(self) -> dict[str, object] | None:
        """One pass (blocking); the report as a dict, or None when the store could not be asked."""
        from hydro_serving.store import open_store

        try:
            report = open_store(self.store_url).discover(min_age=self.min_age, allow_unsafe=self.allow_unsafe)
        except HydroError as exc:
            if not self._failing:
                log.warning("model discovery: the store cannot be read (%s); will retry every %gs",
                            exc.message, self.interval)
            self._failing = True
            return None
        finally:
            self.runs += 1
        if self._failing:
            log.info("model discovery: the store answers again")
        self._failing = False
        result = report.to_dict()
        for ref in result["added"]:
            log.info("model discovery: new version %s from files put into the store by another client", ref)
        for group in result["unservable"]:
            key = repr(group)
            if key not in self._reported:
                self._reported.add(key)
                log.warning("model discovery: not adopted, left where it is: %s", group)
        return result

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.discover_once)
            await asyncio.sleep(self.interval)
