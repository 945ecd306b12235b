"""Periodic model discovery: files dropped into the store by other tools become versions on their own.

Data scientists often copy a model with ``aws s3 cp`` instead of ``hydro model upload``; the store's
:meth:`~hydro_serving.store.ModelStore.discover` turns such files into verified versions. The gateway
runs it every ``interval`` seconds in a thread (boto3 is blocking), skipping files younger than
``min_age`` so that an upload still in progress is not taken half-written. A store that cannot be
reached is logged once per outage, never raised: the gateway must keep serving what it has.
"""

from __future__ import annotations

import asyncio
import logging

from hydro_serving.errors import HydroError

log = logging.getLogger("hydro.gateway")

MIN_AGE_SECONDS = 30.0


class DiscoveryLoop:
    """Calls ``open_store(url).discover(min_age)`` every ``interval`` seconds until cancelled."""

    def __init__(self, interval: float, store_url: str | None = None, min_age: float = MIN_AGE_SECONDS) -> None:
        self.interval = interval
        self.store_url = store_url
        self.min_age = min_age
        self.runs = 0
        self._failing = False

    def discover_once(self) -> dict[str, object] | None:
        """One pass (blocking); the report as a dict, or None when the store could not be asked."""
        from hydro_serving.store import open_store

        try:
            report = open_store(self.store_url).discover(min_age=self.min_age)
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
            log.warning("model discovery: no template can serve %s; left where it is", group)
        return result

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.discover_once)
            await asyncio.sleep(self.interval)
