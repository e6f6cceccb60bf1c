"""Where bytes live: a local path or a URI that pyarrow reaches (s3://, gs://, file://, hdfs://).

Datasets (manifests, quarantine lists, Parquet shards), checkpoints, best-K weights and progress
markers all go through these functions, so a folder on this disk and a prefix in a bucket are
read and written by the same code. A local path stays a local path (absolute, `~` expanded);
a URI stays a URI, and pyarrow resolves its endpoint and credentials the usual way (for S3:
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY, ~/.aws, the instance profile).

Writes are whole or absent: a local file is written beside its name and renamed over it; an
object store shows an object only once its upload completed (a crash mid-upload leaves none).
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs


class StorageError(OSError):
    """A location that cannot be reached or read: says which URI, which endpoint, what failed."""


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def normalize(location: str | Path) -> str:
    """A URI as it is (trailing '/' dropped); a local path absolute, with `~` expanded."""
    text = str(location)
    if is_uri(text):
        return text.rstrip("/")
    return str(Path(text).expanduser().resolve())


def join(root: str | Path, *parts: str) -> str:
    return "/".join([str(root).rstrip("/"), *parts])


def name(location: str | Path) -> str:
    """The last component of a path or URI."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=32)
def _from_uri(prefix: str, endpoint: str | None) -> pafs.FileSystem:
    # one filesystem per bucket and endpoint: an S3FileSystem resolves credentials when made
    fs, _ = pafs.FileSystem.from_uri(prefix + "/")
    return fs


def filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, the path inside it) of a local path or a URI."""
    text = str(location)
    if not is_uri(text):
        return pafs.LocalFileSystem(), normalize(text)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), parsed.path
    fs = _from_uri(f"{parsed.scheme}://{parsed.netloc}", endpoint(text))
    return fs, f"{parsed.netloc}{parsed.path}".rstrip("/")


def endpoint(location: str | Path) -> str | None:
    """The server a URI's requests go to, as a user would name it (None for local files)."""
    scheme = urlparse(str(location)).scheme if is_uri(location) else ""
    if scheme == "s3":
        url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return url or f"AWS S3{f' ({region})' if region else ''}"
    if scheme == "gs":
        return os.environ.get("STORAGE_EMULATOR_HOST") or "Google Cloud Storage"
    if scheme in ("", "file"):
        return None
    return scheme


def where(location: str | Path) -> str:
    """`location`, and for a URI the endpoint it is read through: for error messages."""
    end = endpoint(location)
    return f"{location} (endpoint {end})" if end else str(location)


def _fail(location: str | Path, doing: str, exc: BaseException) -> StorageError:
    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
    hint = ""
    if is_uri(location):
        hint = ("; check the URI, that the endpoint answers, and the credentials this machine "
                "has (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an "
                "instance profile for s3://)")  # fmt: skip
    return StorageError(f"cannot {doing} {where(location)}: {detail}{hint}")


def info(location: str | Path) -> pafs.FileInfo:
    fs, path = filesystem(location)
    try:
        return fs.get_file_info(path)
    except (OSError, ValueError) as exc:
        raise _fail(location, "reach", exc) from exc


def exists(location: str | Path) -> bool:
    return info(location).type != pafs.FileType.NotFound


def is_dir(location: str | Path) -> bool:
    return info(location).type == pafs.FileType.Directory


def read_bytes(location: str | Path) -> bytes | None:
    """The whole file, or None when there is none."""
    fs, path = filesystem(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        if not exists(location):
            return None
        raise _fail(location, "read", exc) from exc


def write_bytes(location: str | Path, data: bytes) -> None:
    """Write a whole file (see the module's note on atomicity)."""
    with open_output(location) as f:
        f.write(data)


class open_output:  # noqa: N801 - used as a context manager, like open()
    """A writable stream whose file appears under `location` only when the block exits
    without an exception. Locally: written under a temporary name, renamed over `location`.
    In an object store: buffered here and uploaded on exit (pyarrow cannot abort an upload it
    has begun, and its close() would publish half a file); an upload cut off by a crash
    leaves no object, as S3 shows an object only once its upload completed."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        self.fs, self.path = filesystem(location)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __enter__(self):
        if not self.local:
            self.stream = pa.BufferOutputStream()
            return self.stream
        self.tmp = f"{self.path}.tmp-{os.getpid()}"
        try:
            self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
            self.stream = self.fs.open_output_stream(self.tmp)
        except (OSError, ValueError) as exc:
            raise _fail(self.location, "write", exc) from exc
        return self.stream

    def __exit__(self, kind, exc, tb):
        if kind is not None:  # nothing appears
            self.stream.close()
            if self.local:
                with contextlib.suppress(OSError):
                    self.fs.delete_file(self.tmp)
            return False
        try:
            if self.local:
                self.stream.close()
                self.fs.move(self.tmp, self.path)
            else:
                data = self.stream.getvalue()
                with self.fs.open_output_stream(self.path) as out:
                    out.write(data)
        except (OSError, ValueError) as exc:
            raise _fail(self.location, "write", exc) from exc
        return False


def open_input_file(location: str | Path):
    """A random-access file (what pyarrow.parquet reads row groups from)."""
    fs, path = filesystem(location)
    try:
        return fs.open_input_file(path)
    except (OSError, ValueError) as exc:
        raise _fail(location, "read", exc) from exc


def delete(location: str | Path) -> None:
    fs, path = filesystem(location)
    if exists(location):
        fs.delete_file(path)


def delete_tree(location: str | Path) -> None:
    fs, path = filesystem(location)
    if exists(location):
        fs.delete_dir(path)


def listing(location: str | Path) -> dict[str, int | None]:
    """Name → size (None for a folder) of what lies directly under a folder or prefix."""
    fs, path = filesystem(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (OSError, ValueError) as exc:
        raise _fail(location, "list", exc) from exc
    return {i.base_name: i.size if i.type == pafs.FileType.File else None for i in infos}


def listdir(location: str | Path) -> list[str]:
    """Names directly under a folder or prefix (empty when there is none)."""
    return sorted(listing(location))


def check_reachable(location: str | Path, what: str = "data") -> None:
    """Fail with one clear line when `location`'s endpoint cannot be reached or refuses this
    machine's credentials; a missing object is not an error here (callers say what is missing)."""
    fs, path = filesystem(location)
    if isinstance(fs, pafs.LocalFileSystem):  # a path, or file:// (a shared mount)
        return
    bucket = path.split("/", 1)[0]
    try:
        fs.get_file_info(path)
        kind = fs.get_file_info(bucket).type
    except (OSError, ValueError) as exc:
        raise _fail(location, f"reach the {what} at", exc) from exc
    if kind == pafs.FileType.NotFound:
        raise StorageError(f"cannot reach the {what} at {where(location)}: the bucket "
                           f"'{bucket}' does not exist (or these credentials may not see it)")  # fmt: skip
