"""The model store: versioned models in S3-compatible storage or a directory, and a local cache.

Public API: :func:`open_store` -> :class:`ModelStore`; :func:`fetch_model` for runtimes;
:class:`Manifest`; :func:`detect_framework`; :func:`parse_ref`; trust (:class:`TrustPolicy`,
:class:`SigningKey`, :class:`Pin`) in :mod:`.trust`. boto3 is imported only when an
``s3://`` store is opened, so a directory store and a cache hit never pay for it.
"""

from hydro_serving.store.cache import ModelCache, default_cache_dir, fetch_model, manifest_of
from hydro_serving.store.frameworks import detect_framework
from hydro_serving.store.manifest import FileEntry, Manifest
from hydro_serving.store.profile import profile_csv
from hydro_serving.store.refs import ModelRef, parse_ref
from hydro_serving.store.signature_file import load_signature_file
from hydro_serving.store.store import (
    DiscoveryReport,
    ModelStore,
    UnservableGroup,
    default_store_url,
    open_store,
    pin_model,
)
from hydro_serving.store.trust import Pin, SigningKey, TrustPolicy

__all__ = [
    "DiscoveryReport",
    "FileEntry",
    "Manifest",
    "ModelCache",
    "ModelRef",
    "ModelStore",
    "Pin",
    "SigningKey",
    "TrustPolicy",
    "UnservableGroup",
    "default_cache_dir",
    "default_store_url",
    "detect_framework",
    "fetch_model",
    "load_signature_file",
    "manifest_of",
    "open_store",
    "parse_ref",
    "pin_model",
    "profile_csv",
]
