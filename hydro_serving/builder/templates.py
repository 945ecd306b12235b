"""The builder's view of templates: the registry (:mod:`hydro_serving.templates`) plus the shared Dockerfile.

The registry moved to its own module so that a replica does not import the image builder to learn
its template; the names stay importable from here for the builder's own modules and older code.
"""

from __future__ import annotations

from pathlib import Path

from hydro_serving.templates import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_HEALTHCHECK_START_PERIOD,
    KINDS,
    TEMPLATE_FILE,
    Template,
    get_template,
    list_templates,
    load_template,
    scan_templates,
    template_dirs,
)

# Every template's image comes from this one Dockerfile, rendered with the template's ``system_packages``
# and ``healthcheck_start_period``: the images differ only in such data, and eight copies of one Dockerfile
# drift apart. A template that needs more ships its own ``Dockerfile``, which wins.
SHARED_DOCKERFILE = Path(__file__).resolve().with_name("Dockerfile.template")

__all__ = [
    "DEFAULT_BASE_IMAGE", "DEFAULT_HEALTHCHECK_START_PERIOD", "KINDS", "SHARED_DOCKERFILE", "TEMPLATE_FILE",
    "Template", "get_template", "list_templates", "load_template", "scan_templates", "template_dirs",
]
