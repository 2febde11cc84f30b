"""A sink writing one JSON object per interval, one per line, to a file or stdout.

Each object is ``agent.records_json.to_json(result)``, the same stable object as
``sci-agent once --json``. The file is opened for append and line-buffered; before
each write the path is checked (one ``os.stat``) and reopened if logrotate or a
person moved or deleted it, so the new file receives the next lines.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from agent.records import IntervalResult
from agent.records_json import to_json

STDOUT = "-"


class JsonlSink:
    """Appends ``to_json`` of every interval as one line to ``path`` ("-": stdout)."""

    name = "jsonl"

    def __init__(self, path: str | Path) -> None:
        self.path = None if str(path) == STDOUT else Path(path)
        self._file: TextIO | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file

    def open(self) -> None:
        """Open the file for append, creating its directory if needed."""
        if self.path is not None and self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", buffering=1, encoding="utf-8")
            st = os.fstat(self._file.fileno())
            self._identity = (st.st_dev, st.st_ino)

    def write(self, batch: Sequence[IntervalResult]) -> None:
        """Write one line per interval."""
        text = "".join(json.dumps(to_json(r), separators=(",", ":")) + "\n" for r in batch)
        if not text:
            return
        if self.path is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        self._reopen_if_moved()
        assert self._file is not None
        self._file.write(text)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._identity = None

    def _reopen_if_moved(self) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        if moved or self._file is None:
            self.close()
            self.open()
