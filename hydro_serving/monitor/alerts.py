"""The alert webhook: a JSON POST to ``monitoring.alert`` when a function's drift starts and when it ends.

Sent from the gateway's event loop, never from the request path; a receiver that is down or slow
(``TIMEOUT``) loses that message, which is logged and counted
(``hydro_monitor_alerts_total{outcome="error"}``), and never holds up the monitor.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

log = logging.getLogger("hydro.monitor")
TIMEOUT = 5.0
DROP_FROM_SUMMARY = ("histograms",)


def message(event: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The webhook body: what happened, to which function, and the window's summary (without histograms)."""
    return {"event": event, "function": summary["function"], "window": summary["seq"],
            "drifted_fields": summary.get("drifted_fields", []), "drift_share": summary.get("drift_share"),
            "summary": {k: v for k, v in summary.items() if k not in DROP_FROM_SUMMARY}}


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> bool:
    try:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=TIMEOUT),
                                allow_redirects=False) as response:
            await response.read()
            if response.status >= 300:
                log.warning("alert webhook %s answered %d", url, response.status)
                return False
            return True
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("alert webhook %s failed: %s", url, type(exc).__name__)
        return False
