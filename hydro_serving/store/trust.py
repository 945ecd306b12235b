"""Which models may be loaded: ed25519 signatures of manifests, trusted keys, pins, pickle rules.

Why signatures: the sha256 in a manifest comes from the same bucket as the file, so it proves the
bytes were not damaged, not who wrote them. A signature made with a key the operator trusts does.

* **Keys.** ``hydro keys generate`` writes ``hydro-signing.key`` (PKCS#8 PEM, mode 0600) and
  ``hydro-signing.pub``, one line ``ed25519:<base64 of the 32-byte public key>``. A key's id is the
  first 16 hex digits of the sha256 of those 32 bytes.
* **Signatures** live beside the manifest in ``manifest.sig`` (the manifest itself is written once
  and never rewritten, so ``hydro model sign`` can sign an existing version). The signature covers
  :meth:`Manifest.canonical_bytes` - every field, every file's sha256 - so any later change of the
  manifest invalidates it.
* **Trusted keys** come from ``HYDRO_TRUSTED_KEYS``: comma-separated entries, each either an inline
  key ``ed25519:<base64>`` (the content of a ``.pub`` file) or the path of a ``.pub`` file (or a
  PEM public key). When any key is trusted, an unsigned manifest or one signed by another key is
  refused before a single model file is fetched, so nothing is unpickled.
* **Pins.** A deploy records ``name:version@sha256:<content digest>``
  (:meth:`Manifest.content_digest`); the replica gets it as ``HYDRO_MODEL_PIN`` and loads exactly
  that version, refusing it if its files are not those bytes.
* **Pickle is code.** Versions created by discovery that hold pickle-based files are refused
  unless the operator opted in (discovery then records ``origin: discovery``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydro_serving.errors import ConfigError, StoreError, UntrustedModelError
from hydro_serving.store.manifest import Manifest

TRUSTED_KEYS_ENV = "HYDRO_TRUSTED_KEYS"
PIN_ENV = "HYDRO_MODEL_PIN"
PIN_ANNOTATION = "hydro.model/pin"
# Why a deploy left a store model unpinned (the gateway could not resolve it): shown by deploy and describe.
UNPINNED_ANNOTATION = "hydro.model/unpinned"
PRIVATE_KEY_NAME = "hydro-signing.key"
PUBLIC_KEY_NAME = "hydro-signing.pub"
KEY_PREFIX = "ed25519:"
ALGORITHM = "ed25519"
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle", ".cloudpickle", ".pt", ".pth", ".sav")
PIN_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]{0,62}):(?P<version>[1-9][0-9]{0,17})"
                    r"@sha256:(?P<digest>[0-9a-f]{64})$")


def _ed25519() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_line(public_raw: bytes) -> str:
    return KEY_PREFIX + base64.b64encode(public_raw).decode()


# ---- keys ------------------------------------------------------------------------------------------


def generate_keys(out_dir: Path) -> tuple[Path, Path, str]:
    """Write a new key pair into ``out_dir``; never overwrites. Returns (private, public, key id)."""
    from cryptography.hazmat.primitives import serialization

    out_dir = Path(out_dir).expanduser()
    private_path, public_path = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} already exists; move it away or pick another --out", field="out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out_dir}: {exc.strerror or exc}", field="out") from exc
    key = _ed25519().Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the first byte
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        public_path.write_text(public_line(raw) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write keys into {out_dir}: {exc.strerror or exc}", field="out") from exc
    return private_path, public_path, key_id(raw)


@dataclass(frozen=True)
class SigningKey:
    """A private key loaded from a PEM file, with the id of its public half."""

    key: Any
    public_raw: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.public_raw)

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        from cryptography.hazmat.primitives import serialization

        path = Path(path).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the signing key {path}: {exc.strerror or exc}", field="key") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is not an unencrypted PEM private key (hydro keys generate writes one)",
                              field="key") from exc
        if not isinstance(key, _ed25519().Ed25519PrivateKey):
            raise ConfigError(f"{path} is not an ed25519 key (hydro keys generate writes one)", field="key")
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(key, raw)

    def sign(self, manifest: Manifest) -> bytes:
        """The ``manifest.sig`` object for ``manifest`` (JSON)."""
        body = manifest.canonical_bytes()
        return json.dumps({
            "algorithm": ALGORITHM,
            "key_id": self.key_id,
            "public_key": public_line(self.public_raw),
            "manifest_sha256": hashlib.sha256(body).hexdigest(),
            "signature": base64.b64encode(self.key.sign(body)).decode(),
        }, indent=2).encode()


def _parse_public(entry: str, where: str) -> bytes:
    """32 raw bytes from ``ed25519:<base64>``, a .pub file holding that line, or a PEM public key file."""
    entry = entry.strip()
    if entry.startswith(KEY_PREFIX):
        try:
            raw = base64.b64decode(entry[len(KEY_PREFIX):], validate=True)
        except ValueError as exc:
            raise ConfigError(f"{where}: {entry[:24]}... is not base64", field=where) from exc
        if len(raw) != 32:
            raise ConfigError(f"{where}: an ed25519 public key is 32 bytes, got {len(raw)}", field=where)
        return raw
    path = Path(entry).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read public key file {path}: {exc.strerror or exc}",
                          field=where) from exc
    text = data.decode(errors="replace").strip()
    if text.startswith(KEY_PREFIX):
        return _parse_public(text, where)
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {path} is neither 'ed25519:<base64>' nor a PEM public key",
                          field=where) from exc
    if not isinstance(key, _ed25519().Ed25519PublicKey):
        raise ConfigError(f"{where}: {path} is not an ed25519 public key", field=where)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def parse_trusted_keys(entries: Iterable[str], where: str = TRUSTED_KEYS_ENV) -> dict[str, bytes]:
    """key id -> raw public key for each entry (inline ``ed25519:...`` or a file path)."""
    keys: dict[str, bytes] = {}
    for entry in entries:
        if entry.strip():
            raw = _parse_public(entry, where)
            keys[key_id(raw)] = raw
    return keys


def trusted_keys_from_env(environ: dict[str, str] | None = None) -> dict[str, bytes]:
    env = os.environ if environ is None else environ
    return parse_trusted_keys(env.get(TRUSTED_KEYS_ENV, "").split(","))


def trusted_keys_value(keys: dict[str, bytes]) -> str:
    """The ``HYDRO_TRUSTED_KEYS`` value that hands these keys to a replica (inline, no files needed)."""
    return ",".join(public_line(raw) for raw in keys.values())


# ---- verification ----------------------------------------------------------------------------------


def verify_signature(manifest: Manifest, sig_bytes: bytes | None, trusted: dict[str, bytes]) -> str:
    """The key id that signed ``manifest`` if it is trusted; UntrustedModelError saying why otherwise."""
    from cryptography.exceptions import InvalidSignature

    ref = manifest.ref
    if sig_bytes is None:
        raise UntrustedModelError(f"model {ref} is not signed and this server only loads models signed by a trusted "
                             f"key ({', '.join(sorted(trusted))}); sign it with: hydro model sign {ref} --key KEY",
                             field="model")
    try:
        sig = json.loads(sig_bytes)
        kid = str(sig["key_id"])
        blob = base64.b64decode(str(sig["signature"]), validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise UntrustedModelError(f"model {ref} has a damaged signature object (manifest.sig)", field="model") from exc
    public = trusted.get(kid)
    if public is None:
        raise UntrustedModelError(f"model {ref} is signed by key {kid[:16]}, which is not among the trusted keys "
                             f"({', '.join(sorted(trusted))})", field="model")
    try:
        _ed25519().Ed25519PublicKey.from_public_bytes(public).verify(blob, manifest.canonical_bytes())
    except InvalidSignature:
        raise UntrustedModelError(f"model {ref}: the signature of key {kid} does not match the manifest "
                             "(the manifest changed after it was signed)", field="model") from None
    return kid


def pickle_files(manifest: Manifest) -> list[str]:
    """Files of a version whose format runs code when loaded (pickle, joblib, cloudpickle, torch)."""
    return [f.path for f in manifest.files if f.path.lower().endswith(PICKLE_SUFFIXES)]


def check_discovered(manifest: Manifest, allow_unsafe: bool = False) -> None:
    """Refuse a pickle-based version created by discovery unless the operator opted in."""
    if manifest.origin == "discovery" and not allow_unsafe:
        found = pickle_files(manifest)
        if found:
            raise UntrustedModelError(f"model {manifest.ref} was created by discovery from files dropped into the "
                                 f"store and holds pickle ({', '.join(found[:3])}), which is code; upload it "
                                 "with hydro model upload --sign, or run the gateway with "
                                 "--discover-unsafe-formats", field="model")


# ---- pins ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """``name:version@sha256:<content digest>``: exactly which bytes a deployed function loads."""

    name: str
    version: int
    digest: str

    def __str__(self) -> str:
        return f"{self.name}:{self.version}@sha256:{self.digest}"

    @classmethod
    def of(cls, manifest: Manifest) -> Pin:
        return cls(manifest.name, manifest.version, manifest.content_digest())

    @classmethod
    def parse(cls, text: str, where: str = PIN_ENV) -> Pin:
        m = PIN_RE.match(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise ConfigError(f"{where} must look like name:version@sha256:<64 hex>, got {str(text)[:120]!r}",
                              field=where)
        return cls(m["name"], int(m["version"]), m["digest"])

    def check(self, manifest: Manifest) -> None:
        if (manifest.name, manifest.version) != (self.name, self.version):
            raise UntrustedModelError(f"the deploy pinned {self}, but {manifest.ref} was resolved", field="model")
        digest = manifest.content_digest()
        if digest != self.digest:
            raise UntrustedModelError(f"model {manifest.ref} is not the one the deploy pinned: its files digest to "
                                 f"sha256:{digest[:16]}..., the pin says sha256:{self.digest[:16]}... "
                                 "(the version was changed in the store after the deploy)", field="model")


def replica_trust_environment(annotations: dict[str, str], trusted_keys: str) -> dict[str, str]:
    """The variables a replica needs to enforce trust: ``HYDRO_MODEL_PIN`` and ``HYDRO_TRUSTED_KEYS``.

    ``annotations`` are the deployed spec's (the gateway records the pin there); ``trusted_keys``
    is the gateway's ``HYDRO_TRUSTED_KEYS`` value, inline (public keys are not secrets).
    """
    env: dict[str, str] = {}
    pin = annotations.get(PIN_ANNOTATION)
    if pin:
        env[PIN_ENV] = pin
    if trusted_keys:
        env[TRUSTED_KEYS_ENV] = trusted_keys
    return env


@dataclass
class TrustPolicy:
    """What a process accepts: trusted keys (none: signatures not required), a pin, discovered pickle."""

    trusted: dict[str, bytes] = field(default_factory=dict)
    pin: Pin | None = None
    allow_discovered_pickle: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> TrustPolicy:
        env = os.environ if environ is None else environ
        pin_text = env.get(PIN_ENV, "").strip()
        pin = Pin.parse(pin_text) if pin_text else None
        # a pinned version was vetted by the gateway at deploy, with the operator's discovery opt-in;
        # without a pin (hydro run, a hand-made replica) a discovered pickle is refused
        return cls(trusted=trusted_keys_from_env(env), pin=pin, allow_discovered_pickle=pin is not None)

    def check(self, manifest: Manifest, sig_bytes: bytes | None) -> None:
        """Raise UntrustedModelError unless ``manifest`` may be loaded; runs before any file is fetched."""
        if self.pin is not None:
            self.pin.check(manifest)
        if self.trusted:
            verify_signature(manifest, sig_bytes, self.trusted)
        check_discovered(manifest, self.allow_discovered_pickle)


def check_sig_object(raw: bytes, where: str) -> bytes:
    """A ``manifest.sig`` read from the store must at least be a small JSON object."""
    if len(raw) > 16384:
        raise StoreError(f"{where}: manifest.sig is too large to be a signature", field="signature")
    return raw
