"""A ``file,caption`` table (``.csv`` or ``.jsonl``) for ``t2i data folder``, indexed on disk.

The table is read row by row into a temporary SQLite file next to the output, so that looking up an
image's captions costs no memory per row: a 12M-row table takes about its own size on disk and a few
MB of page cache. Rows may name an image several times (one caption each, kept in row order) and in
any order relative to the folder.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from .import_writer import clean_caption

NO_SUCH_IMAGE = "in captions file but no such image"


def read_rows(path: Path) -> Iterator[tuple[str, str]]:
    """(file, caption) rows of a ``.csv`` (header ``file,caption``) or ``.jsonl`` file, one at a time."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"Unsupported captions file {path}: use a .csv (file,caption) or .jsonl file")
    with open(path, newline="", encoding="utf-8") as stream:
        yield from _csv_rows(path, stream) if suffix == ".csv" else _jsonl_rows(path, stream)


def _csv_rows(path: Path, stream) -> Iterator[tuple[str, str]]:
    reader = csv.DictReader(stream)
    if not {"file", "caption"} <= set(reader.fieldnames or ()):
        raise ValueError(f"{path} needs a header row with 'file' and 'caption' columns")
    for row in reader:
        yield row["file"] or "", row["caption"] or ""


def _jsonl_rows(path: Path, stream) -> Iterator[tuple[str, str]]:
    for n, line in enumerate(stream, 1):
        if line.strip():
            obj = json.loads(line)
            if not isinstance(obj, dict) or "file" not in obj or "caption" not in obj:
                raise ValueError(f"{path} line {n}: expected an object with 'file' and 'caption'")
            yield str(obj["file"]), str(obj["caption"])


class CaptionTable:
    """The captions of each image named by a table; a context manager that deletes its SQLite file.

    ``take`` marks an image as found, so that :meth:`unmatched` can name the rows whose file was
    never found (misspelt or deleted images).
    """

    def __init__(self, path: Path, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self._dir = tempfile.TemporaryDirectory(prefix=".captions-", dir=workdir)
        self._db = sqlite3.connect(Path(self._dir.name) / "captions.sqlite")
        try:
            self._fill(path)
        except BaseException:
            self.__exit__()
            raise

    def _fill(self, path: Path) -> None:
        self._db.execute("PRAGMA journal_mode = OFF")  # a scratch file: no crash safety needed
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE rows (name TEXT, file TEXT, caption TEXT, found INTEGER DEFAULT 0)")
        rows = ((name, _normalize(name), clean_caption(text)) for name, text in read_rows(path))
        self._db.executemany("INSERT INTO rows (name, file, caption) VALUES (?, ?, ?)", rows)
        self._db.execute("CREATE INDEX rows_by_file ON rows (file)")

    def take(self, rel: str) -> list[str]:
        """The non-empty captions of image ``rel`` (a relative POSIX path), in row order."""
        self._db.execute("UPDATE rows SET found = 1 WHERE file = ?", (rel,))
        query = "SELECT caption FROM rows WHERE file = ? AND caption != '' ORDER BY rowid"
        return [caption for (caption,) in self._db.execute(query, (rel,))]

    def unmatched(self) -> Iterator[tuple[str, str]]:
        """(file as written, reason) for each distinct file that no :meth:`take` asked for."""
        for (name,) in self._db.execute("SELECT DISTINCT name FROM rows WHERE found = 0"):
            yield name, NO_SUCH_IMAGE

    def __enter__(self) -> CaptionTable:
        return self

    def __exit__(self, *exc) -> None:
        self._db.close()
        self._dir.cleanup()


def _normalize(name: str) -> str:
    """A table's file name as the folder walk spells it: ``/`` separators, no ``./`` or doubled ``/``."""
    return PurePosixPath(name.replace("\\", "/")).as_posix()
