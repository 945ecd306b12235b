"""Kafka streaming pipelines: the ``hydro stream`` worker consumes a function's topic, calls the
function through the transport seam (HTTP to the gateway) and produces its answers and errors.

Modules: :mod:`records` (record <-> call, pure), :mod:`offsets` (what may be committed),
:mod:`pipeline` (one function's lanes), :mod:`worker` (which pipelines run), :mod:`sources`
(gateway or stack file), :mod:`kafka` (the aiokafka client, the only module that imports it).
"""
