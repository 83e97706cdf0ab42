"""Where a sweep's results live: <storage>/<sweep name>, local or s3://.

The storage is, in order: `--storage`, `$RAYDIFF_STORAGE` (cluster/aws.yaml sets it on the
head), the space's `sweep.storage`, `./results`. `raydiff sweep`, `--resume`, `status` and the
dry run all resolve it here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from raydiff import results
from raydiff.config import SearchSpace, search_space_from_dict
from raydiff.config.schema import check_name
from raydiff.errors import UserError

DEFAULT_STORAGE = "results"
STORAGE_ENV = "RAYDIFF_STORAGE"


@dataclass(frozen=True)
class SweepLocation:
    storage: str  # absolute local path or URI
    name: str

    @property
    def uri(self) -> str:
        return results.join(self.storage, self.name)


def resolve_storage(storage: str | None, space_storage: str | None = None) -> str:
    """The storage root: an absolute local path, or a URI as given."""
    storage = storage or os.environ.get(STORAGE_ENV) or space_storage or DEFAULT_STORAGE
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def locate(space: SearchSpace, storage: str | None, name: str | None) -> SweepLocation:
    return SweepLocation(resolve_storage(storage, space.sweep.storage), space.sweep.name if name is None else plain_name(name))


def plain_name(name: str) -> str:
    """A sweep name given on the command line (--name, --resume): one plain folder name."""
    return check_name(name, "--name")


def sweep_exists(loc: SweepLocation) -> bool:
    fs, root = results.filesystem(loc.uri)
    try:
        return fs.get_file_info(root).type != pafs.FileType.NotFound
    except OSError as e:  # the store answered the probe, then refused or failed the request
        raise UserError(f"cannot read storage {loc.storage}: {results.first_line(e)}") from None


def load_saved_space(loc: SweepLocation) -> SearchSpace:
    """The search space a sweep was started with (its search_space.json), for --resume."""
    plain_name(loc.name)
    if not sweep_exists(loc):
        raise UserError(f"no sweep named {loc.name!r} under {loc.storage} to resume")
    fs, root = results.filesystem(loc.uri)
    path = results.join(root, results.SPACE_FILE)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise UserError(f"{loc.uri} is not a raydiff sweep (no {results.SPACE_FILE})")
    try:
        with fs.open_input_stream(path) as f:
            text = f.readall()
    except OSError as e:  # a folder where the file should be, or unreadable
        raise UserError(f"cannot read {path}: {e}") from None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:  # junk, not UTF-8, or nested past what JSON parses
        raise UserError(f"{path} is not a saved search space (not JSON: {e})") from None
    return search_space_from_dict(raw, source=path)
