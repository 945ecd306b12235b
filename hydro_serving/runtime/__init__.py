"""The runtime server inside every function: loads a template's handler once, serves it over HTTP.

Run it with ``python -m hydro_serving.runtime --spec SPEC.json --port N``; build the WSGI app
in-process with :func:`hydro_serving.runtime.app.create_app`. Templates do not import the runtime:
they stand on :mod:`hydro_serving.sdk`, which pulls in neither Flask nor gunicorn.
"""
