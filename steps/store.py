"""Where a run's artifacts live: a local folder (``file://``) or S3-compatible storage (``s3://bucket/prefix``).

Every stage reads and writes through a :class:`Store` with relative keys such as
``exp1/gemma-3-270m_study1_raw_responses.parquet``. Keys are checked part by part
(:func:`safe_key`), so nothing a user types (``..``, absolute paths, backslashes) can
leave the store's root. Writes are atomic for a reader: a local file is written to a
temporary name, fsync'ed and renamed; an S3 object becomes visible only when its upload
completes, so a half-written Parquet file is never read as complete.

S3 settings come from the usual environment: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``), ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (or an explicit endpoint), ``AWS_REGION``. Without keys in the
environment the AWS SDK's default chain is used (profile, web identity, instance role).
A request that fails for a transient reason is retried with exponential backoff and
jitter (:mod:`steps.retry`; ``GRACE_STORE_ATTEMPTS``, default 5); then the step fails with
:class:`StorageError` (exit 6, safe to retry: finished rows are in the checkpoint).
Rejected credentials or a missing bucket raise :class:`StorageAccessError` at once (exit 2).
A local write that fails (full disk, no permission, read-only file system) is a
:class:`StorageError` too, and its temporary file is removed. No message ever contains a
credential.

Every method blocks (file system or network, and the retries' sleeps): async code calls
them through ``asyncio.to_thread``, never on the event loop.
"""

from __future__ import annotations

import errno
import os
import re
import time
import uuid
from pathlib import Path
from typing import Callable, Optional, TypeVar
from urllib.parse import urlparse

from steps.errors import StorageAccessError, StorageError
from steps.redact import redact
from steps.retry import RetryPolicy, backoff_delay

T = TypeVar("T")

DEFAULT_ATTEMPTS = 5
_KEY_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=-]*$")
_PERMANENT = ("ACCESS_DENIED", "SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID", "NO_SUCH_BUCKET", "InvalidAccessKeyId",
              "AccessDenied", "NoSuchBucket", "SignatureDoesNotMatch", "Forbidden")


def safe_key(*parts: str) -> str:
    """Join ``parts`` into a relative key; raise ValueError for anything that could escape the root.

    Each ``/``-separated piece must be a plain name (letters, digits, ``_ . = -``; not
    starting with a dot), so ``..``, ``.``, empty pieces and absolute paths are refused.
    """
    pieces = [p for part in parts for p in str(part).split("/")]
    bad = [p for p in pieces if not _KEY_PART.match(p)]
    if not pieces or bad:
        raise ValueError(f"unsafe storage key {'/'.join(map(str, parts))!r}: pieces {bad or ['<empty>']} are not plain names")
    return "/".join(pieces)


class Store:
    """A root location holding artifacts under relative keys (see the module docstring)."""

    def uri(self, key: str = "") -> str:
        """Where ``key`` is, for people: an absolute path or an ``s3://`` URL."""
        raise NotImplementedError

    def child(self, *parts: str) -> "Store":
        """The store rooted at ``parts`` below this one (e.g. one run's folder)."""
        raise NotImplementedError

    def local_path(self, key: str = "") -> Optional[Path]:
        """The file behind ``key`` (or the root folder) when the store is a local folder, else None."""
        return None

    def read_bytes(self, key: str) -> Optional[bytes]:
        """The object's bytes, or None when it does not exist."""
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace ``key`` atomically."""
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Keys below ``prefix`` (a folder-like key; "" for everything), sorted; empty when there are none."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """Whether ``key`` is an object (a folder-like prefix is not)."""
        raise NotImplementedError

    def modified(self, key: str) -> Optional[float]:
        """When ``key`` was last written, in seconds since the epoch by the store's own clock; None if absent."""
        raise NotImplementedError

    def check(self) -> None:
        """Write, read back and delete a probe object: wrong credentials or an unreachable store fail here,
        before any model time is spent."""
        key = safe_key(f"_probe-{uuid.uuid4().hex[:12]}")
        self.write_bytes(key, b"grace-pipeline store check\n")
        if self.read_bytes(key) != b"grace-pipeline store check\n":
            raise StorageError(f"{self.uri()}: an object written for the store check did not read back the same")
        self.delete(key)


_LOCAL_HINTS = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is exhausted: free some space",
    errno.EACCES: "permission denied: make the folder writable or choose another --store",
    errno.EPERM: "permission denied: make the folder writable or choose another --store",
    errno.EROFS: "the file system is read-only: choose another --store",
}


def local_storage_error(what: str, path: Path, exc: OSError) -> StorageError:
    """A StorageError for a failed local file operation: the errno's hint and the advice to re-run (the run resumes)."""
    hint = _LOCAL_HINTS.get(exc.errno or 0, "check the folder")
    return StorageError(f"storage failed {what} {path}: {exc.strerror or exc} (errno {exc.errno}); {hint}, then re-run the "
                        "same command: finished rows are in the checkpoint and the run resumes.")


class LocalStore(Store):
    """A folder on this machine (``file://`` URL or a plain path)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def uri(self, key: str = "") -> str:
        """The absolute path of ``key`` (or of the root folder)."""
        return str((self.root / safe_key(key)).resolve() if key else self.root.resolve())

    def child(self, *parts: str) -> "LocalStore":
        """The folder ``parts`` below this one."""
        return LocalStore(self.root / safe_key(*parts))

    def local_path(self, key: str = "") -> Path:
        """The file of ``key`` (or the root folder)."""
        return self.root / safe_key(key) if key else self.root

    def read_bytes(self, key: str) -> Optional[bytes]:
        """The file's bytes; None when it is missing or a folder."""
        path = self.local_path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError as exc:
            raise local_storage_error("reading", path, exc) from None

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a temporary file, fsync it and rename it over ``key``: readers never see a partial file."""
        path = self.local_path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise local_storage_error("writing", path, exc) from None

    def list(self, prefix: str) -> list[str]:
        """Files below ``prefix``, relative to the root, sorted; hidden files (unfinished writes) are left out."""
        folder = self.local_path(prefix)
        try:
            if not folder.is_dir():
                return []
            return sorted(p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        except OSError as exc:
            raise local_storage_error("listing", folder, exc) from None

    def delete(self, key: str) -> None:
        """Remove the file if it exists."""
        path = self.local_path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise local_storage_error("deleting", path, exc) from None

    def exists(self, key: str) -> bool:
        """Whether ``key`` is a file (a folder is not)."""
        return self.local_path(key).is_file()

    def modified(self, key: str) -> Optional[float]:
        """The file's modification time by this machine's clock; None if absent."""
        try:
            return self.local_path(key).stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise local_storage_error("checking", self.local_path(key), exc) from None


class S3Store(Store):
    """A bucket and key prefix on an S3-compatible server, through pyarrow's S3 filesystem."""

    def __init__(self, bucket: str, prefix: str = "", endpoint: Optional[str] = None, attempts: Optional[int] = None,
                 backoff_s: float = 0.5, _fs=None):
        self.bucket, self.prefix = bucket, prefix
        self.endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        self.attempts = attempts or int(os.environ.get("GRACE_STORE_ATTEMPTS") or DEFAULT_ATTEMPTS)
        self.backoff_s = backoff_s
        self._policy = RetryPolicy(max_attempts=self.attempts, base_delay_s=backoff_s, max_delay_s=8.0)
        self._secrets = [os.environ.get(v, "") for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
        self._fs = _fs if _fs is not None else self._make_fs()

    def _make_fs(self):
        from pyarrow import fs

        options = {
            "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            "connect_timeout": 5.0, "request_timeout": 60.0,
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=2),  # our own loop below does the backoff
            "allow_bucket_creation": False, "allow_bucket_deletion": False,
        }
        if self.endpoint:
            options["endpoint_override"] = self.endpoint
        if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
            options.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                           session_token=os.environ.get("AWS_SESSION_TOKEN") or None)
        return fs.S3FileSystem(**options)

    def uri(self, key: str = "") -> str:
        """``s3://bucket/prefix/key`` (or of the store's prefix)."""
        return "s3://" + "/".join(p for p in (self.bucket, self.prefix, safe_key(key) if key else "") if p)

    def child(self, *parts: str) -> "S3Store":
        """The same bucket with ``parts`` appended to the prefix (sharing this store's S3 connection)."""
        prefix = "/".join(p for p in (self.prefix, safe_key(*parts)) if p)
        return S3Store(self.bucket, prefix, self.endpoint, self.attempts, self.backoff_s, _fs=self._fs)

    def _path(self, key: str) -> str:
        return "/".join(p for p in (self.bucket, self.prefix, safe_key(key) if key else "") if p)

    def _call(self, what: str, key: str, operation: Callable[[], T]) -> T:
        """Run ``operation`` with bounded retries; convert failures into the project's storage errors."""
        for attempt in range(1, self.attempts + 1):
            try:
                return operation()
            except OSError as exc:
                message = redact(str(exc), self._secrets)
                where = f"{what} {self.uri(key) if key else self.uri()}"
                endpoint = f" (endpoint {self.endpoint})" if self.endpoint else ""
                if any(code in message for code in _PERMANENT):
                    raise StorageAccessError(
                        f"storage refused {where}{endpoint}: {message}. Check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                        "(in the cluster: the artifact repository Secret) and that the bucket exists.") from None
                if attempt == self.attempts:
                    raise StorageError(
                        f"storage unavailable: {where}{endpoint} failed {self.attempts} times: {message}. Finished rows are "
                        "in the checkpoint; re-run the same command when the storage answers again.") from None
                time.sleep(backoff_delay(attempt, self._policy) or 0.0)
        raise AssertionError("unreachable")

    def read_bytes(self, key: str) -> Optional[bytes]:
        """The object's bytes; None when it is missing or a folder-like prefix. Transient failures are retried."""
        def read() -> Optional[bytes]:
            try:
                with self._fs.open_input_stream(self._path(key)) as stream:
                    return stream.read()
            except FileNotFoundError:  # missing, or a "folder" prefix: not a transient failure
                return None

        return self._call("reading", key, read)

    def exists(self, key: str) -> bool:
        """Whether ``key`` is an object (a folder-like prefix is not). Transient failures are retried."""
        from pyarrow import fs

        return self._call("checking", key, lambda: self._fs.get_file_info(self._path(key)).type == fs.FileType.File)

    def write_bytes(self, key: str, data: bytes) -> None:
        """Upload ``data`` to ``key``; the object becomes visible only once the upload completes."""
        def write() -> None:
            with self._fs.open_output_stream(self._path(key)) as stream:  # visible only once the upload completes
                stream.write(data)

        self._call("writing", key, write)

    def list(self, prefix: str) -> list[str]:
        """Object keys below ``prefix``, relative to the store's prefix, sorted."""
        from pyarrow import fs

        base = "/".join(p for p in (self.bucket, self.prefix) if p)
        selector = fs.FileSelector(self._path(prefix), recursive=True, allow_not_found=True)
        infos = self._call("listing", prefix, lambda: self._fs.get_file_info(selector))
        return sorted(i.path[len(base) + 1:] for i in infos if i.type == fs.FileType.File)

    def modified(self, key: str) -> Optional[float]:
        """The object's last-modified time by the server's clock; None if absent."""
        from pyarrow import fs

        info = self._call("checking", key, lambda: self._fs.get_file_info(self._path(key)))
        return info.mtime.timestamp() if info.type == fs.FileType.File and info.mtime is not None else None

    def delete(self, key: str) -> None:
        """Delete the object if it exists. Transient failures are retried."""
        from pyarrow import fs

        def delete() -> None:
            if self._fs.get_file_info(self._path(key)).type != fs.FileType.NotFound:
                self._fs.delete_file(self._path(key))

        self._call("deleting", key, delete)


def open_store(url: str, s3_endpoint: Optional[str] = None) -> Store:
    """The store at ``url``: ``s3://bucket[/prefix]``, ``file:///folder`` or a plain folder path."""
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise StorageAccessError(f"{url!r}: an S3 store URL needs a bucket: s3://BUCKET[/PREFIX]")
        prefix = parsed.path.strip("/")
        try:
            prefix = safe_key(prefix) if prefix else ""
        except ValueError as exc:
            raise StorageAccessError(f"{url!r}: {exc}") from None
        return S3Store(parsed.netloc, prefix, s3_endpoint)
    if url.startswith("file://"):
        return LocalStore(Path(urlparse(url).path))
    if "://" in url:
        raise StorageAccessError(f"{url!r}: unsupported store; use a folder path, file:///folder or s3://bucket/prefix")
    return LocalStore(Path(url))


def read_url(url: str, s3_endpoint: Optional[str] = None) -> Optional[bytes]:
    """The bytes of one file given as a path, ``file://`` or ``s3://`` URL; None when it does not exist
    (IsADirectoryError for a folder)."""
    if url.startswith("s3://"):
        head, _, name = url.rpartition("/")
        return open_store(head, s3_endpoint).read_bytes(name)
    path = Path(urlparse(url).path if url.startswith("file://") else url)
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder, not a file", str(path))
    return path.read_bytes() if path.is_file() else None
