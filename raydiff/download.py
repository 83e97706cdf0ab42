"""Fetching a file from a URL into the raydiff cache, once, atomically.

Weights and reference statistics that need a network (SSCD, clean-fid's CIFAR-10 statistics) go
through `fetch`: the file lands under a temporary name and is renamed into place, so concurrent
trials on one node never read half a download, and a file already there (pre-staged by the
cluster setup, or fetched by an earlier trial) is used as is. `file_lock` serializes the
fetchers of one file on one node: trials that start together download it once, the rest wait
and find it there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from raydiff.errors import UserError


def is_url(s: str) -> bool:
    return urllib.parse.urlparse(s).scheme in ("http", "https")


def url_filename(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise UserError(f"cannot name a cache file after {url} (no file name in the URL)")
    return name


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on `path` (created, never removed) across the processes of one machine;
    released when the block ends, or when its holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def fetch(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """`dest` if it exists, else downloaded from `url` into it (atomically, once per node)."""
    if dest.is_file():
        return dest
    with file_lock(dest.parent / f".{dest.name}.lock"):
        if dest.is_file():  # another process fetched it while this one waited
            return dest
        return _download(url, dest, timeout)


def _download(url: str, dest: Path, timeout: float) -> Path:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:  # HTTPError is a URLError; both are OSErrors
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"could not fetch {url} into {dest.parent}: {e}; pre-stage the file there") from None
    return dest
