"""Paths that may be URLs: local folders and any fsspec filesystem (``memory://``, ``s3://`` with s3fs,
``gs://`` with gcsfs, ...), as Lightning reaches them through fsspec.

Local paths keep the plain ``os`` calls (and ``trainer.checkpoint.atomic_save``'s temp-file + fsync +
rename); everything else goes through the URL's fsspec filesystem. ``http(s)://`` is read-only.
"""
from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from typing import Any, List, Union

import fsspec
import fsspec.utils
from fsspec.core import url_to_fs

PathLike = Union[str, "os.PathLike[str]"]


def is_local_path(path: PathLike) -> bool:
    """Whether ``path`` is on the local filesystem (a plain path or ``file://``), Lightning's test."""
    return fsspec.utils.get_protocol(os.fspath(path)) == "file"


def is_http(path: PathLike) -> bool:
    return fsspec.utils.get_protocol(os.fspath(path)) in ("http", "https")


def get_filesystem(path: PathLike) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem that serves ``path``."""
    fs, _ = url_to_fs(os.fspath(path))
    return fs


def exists(path: PathLike) -> bool:
    return get_filesystem(path).exists(os.fspath(path))


def read_bytes(path: PathLike) -> bytes:
    """The whole file; ``http(s)://`` URLs are fetched with a plain GET."""
    path = os.fspath(path)
    if is_http(path):
        try:
            with urllib.request.urlopen(path) as response:  # noqa: S310 - the user named this URL
                return response.read()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise FileNotFoundError(f"{path!r}: HTTP 404 Not Found") from err
            raise
    with get_filesystem(path).open(path, "rb") as f:
        return f.read()


def write_bytes_remote(data: bytes, path: PathLike) -> None:
    """Writes ``data`` to a non-local ``path`` in one fsspec transaction (the file appears only once complete,
    where the filesystem supports it), creating its folder first."""
    path = os.fspath(path)
    if is_http(path):
        raise ValueError(f"Cannot write to {path!r}: http(s) URLs are read-only. Save to a local path or an fsspec URL.")
    fs, urlpath = url_to_fs(path)
    parent = os.path.dirname(urlpath)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.transaction:
        with fs.open(urlpath, "wb") as f:
            f.write(data)


def makedirs(path: PathLike) -> None:
    path = os.fspath(path)
    if is_local_path(path):
        os.makedirs(path, exist_ok=True)
    else:
        get_filesystem(path).makedirs(path, exist_ok=True)


def is_dir(path: PathLike) -> bool:
    path = os.fspath(path)
    return os.path.isdir(path) if is_local_path(path) else get_filesystem(path).isdir(path)


def list_dir(path: PathLike) -> List[str]:
    """Entry names (not full paths) of the folder ``path``; ``[]`` when it does not exist."""
    path = os.fspath(path)
    if is_local_path(path):
        return os.listdir(path) if os.path.isdir(path) else []
    fs = get_filesystem(path)
    if not fs.isdir(path):
        return []
    return [os.path.basename(str(p).rstrip("/")) for p in fs.ls(path, detail=False)]


def remove(path: PathLike) -> None:
    """Deletes the file (or folder) ``path`` if it exists."""
    path = os.fspath(path)
    fs = get_filesystem(path)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def modified_time(path: PathLike) -> float:
    """Modification time as a POSIX timestamp (for picking the newest ``last.ckpt``)."""
    path = os.fspath(path)
    if is_local_path(path):
        return os.path.getmtime(path)
    value: Any = get_filesystem(path).modified(path)
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def load_bytes_as_buffer(path: PathLike) -> io.BytesIO:
    return io.BytesIO(read_bytes(path))


__all__ = [
    "exists", "get_filesystem", "is_dir", "is_http", "is_local_path", "list_dir", "load_bytes_as_buffer", "makedirs",
    "modified_time", "read_bytes", "remove", "write_bytes_remote",
]
