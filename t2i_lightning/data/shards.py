"""WebDataset shard files: naming, atomic writing, the dataset index, and resolving shard specs.

Every shard is written under a temporary name and renamed when complete, so a file under a
final ``*.tar`` name is always a whole shard. Tar members carry a fixed mtime and owner so the
same samples always give byte-identical shards.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import braceexpand
import webdataset as wds

SAMPLES_PER_SHARD = 1000
_UMASK = os.umask(0)
os.umask(_UMASK)
INDEX_NAME = "index.json"
INDEX_FORMAT = "t2i-lightning-shards/1"
REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://", "hf://")


class ShardSpecError(FileNotFoundError):
    """A shard path or pattern that names no readable shard."""


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``: ``train-000003.tar``."""
    return f"{split}-{index:06d}.tar"


class DiskFullError(OSError):
    """An output could not be written because its file system is full (or over quota)."""


FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def full_disk_error(error: BaseException) -> OSError | None:
    """The "no space left" error behind ``error`` (itself or what it was raised from or while handling:
    torch.save's writer, failing on a full disk, raises "unexpected pos ..." over the ENOSPC), else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in FULL_DISK_ERRNOS:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _free_space(directory: Path) -> str:
    try:
        return f"{shutil.disk_usage(directory).free / 2**20:.0f} MiB free there"
    except OSError:
        return "free space unknown"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A full file system, however the writer reports it, becomes one :class:`DiskFullError` naming
    ``path``; the temporary file is removed and an earlier file under ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path: Path | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except Exception as error:
        full = full_disk_error(error)
        if full is None:
            raise
        raise DiskFullError(
            f"No space left on the device to write {path} ({full.strerror}; {_free_space(path.parent)}): free "
            "some space or write the output elsewhere, then run the same command again (finished files are kept)"
        ) from error
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def check_writable(path: str | os.PathLike, directory: bool = False) -> Path:
    """Create the directory of output file ``path`` (or ``path`` itself with ``directory``) and write a
    probe file there, so that an output that cannot be written fails naming it before any long work.

    The probe's suffix is not ``.tmp``: another rank's :func:`remove_stale_temporaries` in the same
    directory must not delete it while it is open (a DDP extraction did, and the probe's close failed)."""
    path = Path(path)
    if not directory and path.is_dir():
        raise ValueError(f"Output {path} is a directory: give a file name")
    parent = path if directory else path.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ValueError(f"Cannot write output {path}: {blocker} is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".write-check.", suffix=".probe", dir=parent):
            pass
    except OSError as error:
        raise ValueError(f"Cannot write output {path}: {error.strerror or error}") from error
    return path


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Delete temporary files that a killed :func:`atomic_path` left in ``directory``."""
    stale = list(Path(directory).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_shard(path: str | os.PathLike, samples: Iterable[dict[str, Any]]) -> int:
    """Write ``samples`` (``__key__`` plus ``ext -> bytes|str``) to a tar shard atomically.

    Members are ordered by sample, then by extension, with mtime 0 and a fixed owner, so the
    output depends on the samples alone. Returns the number of samples written.
    """
    count = 0
    with atomic_path(path) as tmp:
        with (
            open(tmp, "wb") as stream,
            wds.TarWriter(stream, user="t2i", group="t2i", mtime=0, encoder=False) as writer,
        ):
            for sample in samples:
                writer.write(sample)
                count += 1
    return count


def read_index(root: str | os.PathLike) -> dict[str, Any] | None:
    """The ``index.json`` of a dataset directory, or None when there is none."""
    path = Path(root) / INDEX_NAME
    if not path.exists():
        return None
    return json.loads(path.read_text())


def update_index(root: str | os.PathLike, split: str, entry: dict[str, Any], **top: Any) -> dict:
    """Record ``split``'s shards and counts in ``root/index.json`` (other splits are kept)."""
    index = read_index(root) or {"format": INDEX_FORMAT, "splits": {}}
    index.update(top)
    index["splits"][split] = entry
    write_json_atomic(Path(root) / INDEX_NAME, index)
    return index


def recorded_shard_counts(root: str | os.PathLike) -> dict[str, int]:
    """The number of samples each shard of dataset ``root`` holds (by file name), as its ``index.json`` records
    it: ``shard_counts`` where the writer listed them, else derived where that is exact (a split of one shard
    holds ``count``; with nothing skipped at import, every shard but the last holds ``samples_per_shard``).
    Shards it cannot tell about are absent; a dataset without an index gives {}."""
    try:
        index = read_index(root) or {}
    except (OSError, ValueError):  # an unreadable index: no counts, the reader counts read errors instead
        return {}
    counts: dict[str, int] = {}
    for entry in index.get("splits", {}).values():
        names, recorded = entry.get("shards", []), entry.get("shard_counts")
        if recorded is not None and len(recorded) == len(names):
            counts.update(zip(names, recorded, strict=True))
        elif len(names) == 1:
            counts[names[0]] = entry["count"]
        elif names and not entry.get("skipped"):
            per = (entry.get("args") or index.get("args") or {}).get("samples_per_shard")
            last = entry["count"] - (len(names) - 1) * per if per else 0
            if 0 < last <= per:
                counts.update(dict.fromkeys(names[:-1], per))
                counts[names[-1]] = last
    return counts


def expected_samples(urls: Iterable[str]) -> dict[str, int]:
    """``url -> samples`` for the local shards among ``urls`` whose dataset index records their count."""
    by_directory: dict[str, dict[str, int]] = {}
    expected = {}
    for url in urls:
        if _is_remote(url):
            continue
        directory = os.path.dirname(url) or "."
        if directory not in by_directory:
            by_directory[directory] = recorded_shard_counts(directory)
        count = by_directory[directory].get(os.path.basename(url))
        if count is not None:
            expected[url] = count
    return expected


def _is_remote(spec: str) -> bool:
    return spec.startswith(REMOTE_PREFIXES)


SPLIT_SHARD = re.compile(r"^(.+)-\d+\.tar$")
"""A shard named by its split, as the importers and the generator write them: ``<split>-000000.tar``."""


def resolve_shards(spec: str | os.PathLike | list, split: str | None = None) -> list[str]:
    """Turn a shard spec into a sorted list of shard URLs, failing loudly when it names nothing.

    A spec is a brace pattern (``data/x/train-{000000..000009}.tar``), a glob
    (``data/x/train-*.tar``), a single ``.tar`` file, a directory, or a list of these. A
    directory yields its ``{split}-*.tar`` shards when ``split`` is given; a directory whose shards
    carry no split name (``00000.tar``, img2dataset output) yields all of them. A directory split into
    named shards (``train-000000.tar``, as the importers write) that has none of ``split`` is an
    error, never a silent fallback to the other splits' shards (validating or evaluating on training
    images). Remote URLs (``pipe:``, ``http(s)://``, ...) are passed through unchecked.
    """
    if isinstance(spec, (list, tuple)):
        urls = [u for s in spec for u in resolve_shards(s, split)]
        if not urls:
            raise ShardSpecError(f"No shards in {spec!r}")
        return urls
    spec = os.fspath(spec)
    if not spec.strip():
        raise ShardSpecError("Empty shard path: give a directory, a .tar file, a glob or a brace pattern")
    if _is_remote(spec):
        return list(braceexpand.braceexpand(spec))
    if os.path.isdir(spec):
        shards = sorted(glob.glob(os.path.join(spec, "*.tar")))
        if not shards:
            raise ShardSpecError(f"No shards ('*.tar') in directory '{spec}'")
        named = {match.group(1) for path in shards if (match := SPLIT_SHARD.match(os.path.basename(path)))}
        if not split or not named:
            return shards
        found = [path for path in shards if os.path.basename(path).startswith(f"{split}-")]
        if not found:
            raise ShardSpecError(
                f"No '{split}-*.tar' shards in '{spec}' (it holds {', '.join(sorted(named))} shards): import a "
                f"{split} split into it (`t2i data ... --split {split}`) or name other shards for the {split} split"
            )
        return found
    expanded = list(braceexpand.braceexpand(spec))
    urls: list[str] = []
    missing: list[str] = []
    for item in expanded:
        if glob.has_magic(item):
            urls.extend(sorted(glob.glob(item)))
        elif os.path.isfile(item):
            urls.append(item)
        else:
            missing.append(item)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ShardSpecError(f"Shard path(s) not found for '{spec}': {shown}")
    if not urls:
        raise ShardSpecError(f"No shards match '{spec}'")
    return urls
