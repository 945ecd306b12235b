"""The directory backend: the same layout as S3, on a local disk, for one machine.

Every write goes to a temporary file beside the target (fsynced) and is then published in one
step, so a reader - or a crash at any moment - sees either the old object or the complete new
one, never half a file:

* a plain write is ``rename`` over the target;
* an exclusive write (S3's ``If-None-Match: *``) is ``link`` of the temporary file to the target,
  which fails if the target exists - the equivalent of ``O_EXCL`` without ever exposing an empty
  file (an ``O_EXCL`` create followed by a write left an empty ``manifest.json`` after a crash);
* a compare-and-swap (S3's ``If-Match``) holds an ``flock`` on a lock file beside the target while
  it compares the current content's sha256 with the expected tag and renames.

Temporary and lock files carry :data:`TMP_MARK`; listings skip them, and
:meth:`DirectoryBackend.uploads_in_progress` reports them (the directory's "multipart uploads").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from hydro_serving.errors import StoreError
from hydro_serving.store.backend import Backend, MissingKey, ObjectInfo, Progress

TMP_MARK = ".hydro-tmp-"
CHUNK = 1024 * 1024


class DirectoryBackend(Backend):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise StoreError(f"refusing key outside the store: {key!r}")
        return self.root.joinpath(*parts)

    def _tmp_for(self, path: Path) -> Path:
        return path.with_name(f"{TMP_MARK}{uuid.uuid4().hex}-{path.name}")

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise MissingKey(key) from exc
        except OSError as exc:
            raise StoreError(f"cannot read {self._path(key)}: {exc.strerror or exc}") from exc

    def _staged(self, path: Path, data: bytes) -> Path:
        """``data`` in a complete, fsynced temporary file beside ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_for(path)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    @staticmethod
    def _sync_dir(path: Path) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def write(self, key: str, data: bytes, *, exclusive: bool = False) -> bool:
        path = self._path(key)
        try:
            tmp = self._staged(path, data)
            try:
                if exclusive:
                    try:
                        os.link(tmp, path)  # atomic and exclusive: the complete file or nothing
                    except FileExistsError:
                        return False
                else:
                    os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            self._sync_dir(path.parent)
            return True
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        data = self.read(key)
        return data, hashlib.sha256(data).hexdigest()

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        lock = path.with_name(f"{TMP_MARK}lock-{path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def write_if(self, key: str, data: bytes, tag: str | None) -> bool:
        path = self._path(key)
        try:
            with self._locked(path):
                try:
                    current: str | None = hashlib.sha256(path.read_bytes()).hexdigest()
                except FileNotFoundError:
                    current = None
                if current != tag:
                    return False
                tmp = self._staged(path, data)
                try:
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
                self._sync_dir(path.parent)
                return True
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def uploads_in_progress(self, prefix: str) -> list[str]:
        base_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(base_key) if base_key else self.root
        found = []
        if base.is_dir():
            for dirpath, _dirs, files in os.walk(base):
                for fname in files:
                    if fname.startswith(TMP_MARK) and not fname.startswith(f"{TMP_MARK}lock-"):
                        key = Path(dirpath, fname).relative_to(self.root).as_posix()
                        if key.startswith(prefix):
                            found.append(key)
        return found

    def upload(self, key: str, source: Path, progress: Progress | None = None) -> None:
        path = self._path(key)
        tmp = self._tmp_for(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    if progress:
                        progress(len(chunk))
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, path)
        except FileNotFoundError as exc:
            tmp.unlink(missing_ok=True)
            if not Path(source).exists():
                raise StoreError(f"{source} disappeared during the upload") from exc
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot copy {source} to {path}: {exc.strerror or exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def download(self, key: str, dest: Path, progress: Progress | None = None) -> None:
        path = self._path(key)
        try:
            with open(path, "rb") as src, open(dest, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    if progress:
                        progress(len(chunk))
        except (FileNotFoundError, IsADirectoryError) as exc:
            if not path.is_file():
                raise MissingKey(key) from exc
            raise StoreError(f"cannot write {dest}: {exc.strerror or exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot copy {path} to {dest}: {exc.strerror or exc}") from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk the deepest directory the prefix names fully, then filter on the whole prefix.
        base_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(base_key) if base_key else self.root
        if not base.is_dir():
            return
        try:
            for dirpath, _dirs, files in os.walk(base):
                for fname in files:
                    if fname.startswith(TMP_MARK):
                        continue
                    full = Path(dirpath, fname)
                    key = full.relative_to(self.root).as_posix()
                    if not key.startswith(prefix):
                        continue
                    try:
                        st = full.stat()
                    except FileNotFoundError:  # removed while we walked
                        continue
                    yield ObjectInfo(key, st.st_size, st.st_mtime, f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}")
        except OSError as exc:
            raise StoreError(f"cannot list {base}: {exc.strerror or exc}") from exc

    def size(self, key: str) -> int | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if not os.path.isdir(self._path(key)) else None

    def delete(self, keys: list[str]) -> None:
        dirs: set[Path] = set()
        for key in keys:
            path = self._path(key)
            try:
                path.unlink(missing_ok=True)
            except IsADirectoryError:
                shutil.rmtree(path, ignore_errors=True)
            except OSError as exc:
                raise StoreError(f"cannot remove {path}: {exc.strerror or exc}") from exc
            dirs.add(path.parent)
        # Prune directories left empty, so the tree looks like the S3 listing (no empty "folders").
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            while d != self.root and self.root in d.parents:
                try:
                    d.rmdir()
                except OSError:
                    break
                d = d.parent

    def prepare_write(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store directory {self.root}: {exc.strerror or exc}") from exc
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"the store directory {self.root} is not writable")
