"""Monitoring: sampled payloads checked against the training profile, drift windows, feedback, alerts.

The package knows neither HTTP routing nor providers: the gateway offers it raw (request id,
function, request body, response body, status) tuples through :class:`~hydro_serving.monitor.sampler.Sampler`
and mounts the handlers of :mod:`hydro_serving.monitor.api`.
"""
