"""Model names, version numbers and references (``name``, ``name:3``, ``name:production``).

Kept apart from the backends so the CLI, the cache and the runtime parse references the same
way and reject a bad name before any request leaves the machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hydro_serving.errors import ValidationError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LATEST = "latest"


def check_name(name: str, what: str = "model name") -> str:
    """Return ``name`` if valid; raise ValidationError naming the rule otherwise.

    The rule keeps names safe as S3 key segments, directory names and DNS-ish labels.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValidationError(
            f"invalid {what} {name!r}: use 1-63 characters a-z, 0-9, '_' or '-', starting with a letter or digit",
            field="name",
        )
    return name


def check_alias(alias: str) -> str:
    """An alias follows the name rule but must not look like a version number."""
    check_name(alias, "alias")
    if alias.isdigit():
        raise ValidationError(f"invalid alias {alias!r}: an alias cannot be a number", field="alias")
    return alias


def check_version(version: int | str) -> int:
    """Versions are positive integers; strings of digits are accepted from the command line."""
    if isinstance(version, bool):
        raise ValidationError(f"invalid version {version!r}: versions are positive integers", field="version")
    if isinstance(version, str):
        if not version.isdigit():
            raise ValidationError(f"invalid version {version!r}: versions are positive integers", field="version")
        version = int(version)
    if not isinstance(version, int) or version < 1:
        raise ValidationError(f"invalid version {version!r}: versions are positive integers", field="version")
    return version


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: exactly one of ``version`` and ``alias`` is set (``latest`` by default)."""

    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def pinned(self) -> bool:
        """True when the reference names an immutable version, so a cache may answer it alone."""
        return self.version is not None

    def __str__(self) -> str:
        return f"{self.name}:{self.version if self.version is not None else self.alias}"


def parse_ref(ref: str) -> ModelRef:
    """Parse ``name``, ``name:3``, ``name:latest`` or ``name:<alias>``."""
    if not isinstance(ref, str) or not ref:
        raise ValidationError("a model reference must look like name, name:3 or name:alias", field="ref")
    name, sep, tag = ref.partition(":")
    check_name(name)
    if not sep:
        return ModelRef(name, alias=LATEST)
    if not tag:
        raise ValidationError(f"model reference {ref!r} has an empty version after ':'", field="ref")
    if tag.isdigit():
        return ModelRef(name, version=check_version(tag))
    if tag == LATEST:
        return ModelRef(name, alias=LATEST)
    return ModelRef(name, alias=check_alias(tag))


def parse_pinned(ref: str) -> tuple[str, int]:
    """Parse ``name:version`` where the version is required (``alias``, ``rm``)."""
    parsed = parse_ref(ref)
    if parsed.version is None:
        raise ValidationError(f"{ref!r} must name a version, e.g. {parsed.name}:1", field="ref")
    return parsed.name, parsed.version
