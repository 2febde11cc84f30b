"""A durable, bounded on-disk spool between the sampling loop and one network sink.

Layout of a spool directory (one directory per network sink):

- ``0000000000000001.seg``, ``…2.seg``: segments, plain UTF-8 text, one line per
  record, each ending in ``\\n``; the newest segment is the one appended to. A
  segment is closed (fsynced) once it reaches ``segment_bytes``.
- ``cursor``: JSON ``{"segment", "offset", "dropped_lines", "dropped_bytes"}``, the
  first byte not yet acknowledged; replaced atomically (write a temporary file,
  rename it) on every ``ack`` and every drop.
- ``lock``: held with ``flock`` while the spool is open, so two agents cannot share it.

Durability: ``append`` is one ``os.write`` to the kernel (no user-space buffer), so
the data survives the process being killed (SIGKILL, OOM) as soon as it returns.
Segments are fsynced when they are rotated and on ``close``, not on every append:
after a power loss the last moments of data may be missing, never corrupt. The cursor
is not fsynced: after a power loss it may point slightly back, and the lines after it
are sent again, which is harmless because replays are idempotent.

Recovery on open truncates a torn last line (a write cut short: no trailing newline),
drops segments the cursor has passed, and moves a cursor that points into the middle
of a line back to the start of that line (sent again). A cursor it cannot trust
(naming a segment past the newest, or a missing one while newer ones are there, or an
offset past its segment's end) deletes nothing: it is logged with the segments found,
and everything is sent again from the oldest segment. Lines that are not valid UTF-8
or hold NUL bytes (a power-loss tail) are skipped when read, and logged.

Bounded: when an append would take the spool over ``max_bytes``, the oldest segments
are deleted, acknowledged or not; the lost lines are counted (``dropped_lines``,
persisted in the cursor) and logged as a warning.

A full disk (or any failed write): appends are kept in memory, in order, up to
``memory_bytes`` (beyond it the oldest kept lines are dropped and counted in
``dropped_lines``), and written to disk ahead of new lines as soon as a write
succeeds again (tried on every append, and by the sender when it has read everything
on disk). One error line says when the outage starts and one line when it ends,
with the lines kept and dropped. Failing to save the cursor is logged once and
harmless (a restart would resend lines: replays overwrite). Lines still in memory at
``close`` are lost, counted and logged. These bounds are the only ways data is lost.

Threads: one thread appends (the loop) while one other thread reads and acknowledges
(the sender); a lock guards the shared state, and segment data is read outside it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("sci_agent.spool")

DEFAULT_SEGMENT_BYTES = 1 << 20
#: Lines kept in memory while the disk refuses writes (1.5 h of one host at 5 s).
DEFAULT_MEMORY_BYTES = 8 << 20
#: Free space that ends a disk-full outage (writes that succeed before go on quietly).
RECOVERY_ROOM_BYTES = 64 << 10
SEGMENT_SUFFIX = ".seg"
CURSOR_FILE = "cursor"
LOCK_FILE = "lock"
_READ_CHUNK = 256 << 10


class SpoolError(Exception):
    """The spool directory cannot be used (in use by another process, unreadable)."""


@dataclass(frozen=True, slots=True)
class SpoolPosition:
    """Where a batch lies in the spool: opaque to callers, given back to ``ack``."""

    segment: int
    start: int
    end: int
    records: int  # newline-terminated records consumed, corrupt ones included


@dataclass(frozen=True, slots=True)
class Batch:
    """The oldest unacknowledged lines, and where they lie."""

    lines: tuple[str, ...]
    position: SpoolPosition


@dataclass(slots=True)
class _Segment:
    size: int
    lines: int


def segment_name(seq: int) -> str:
    """The file name of segment ``seq``."""
    return f"{seq:016d}{SEGMENT_SUFFIX}"


class Spool:
    """An append-only, segmented, bounded queue of text lines in ``directory``."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        if segment_bytes <= 0 or max_bytes < segment_bytes:
            raise ValueError(
                f"spool max_bytes ({max_bytes}) must be at least segment_bytes ({segment_bytes})"
            )
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.memory_bytes = memory_bytes
        self.dropped_bytes = 0
        self._dropped_lines = 0
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}  # ascending sequence numbers
        self._cursor_seg = 0
        self._cursor_off = 0
        self._cursor_lines = 0  # records before the cursor in its segment
        self._total_bytes = 0
        self._total_lines = 0
        self._write_fd = -1
        self._read_fd: tuple[int, int] | None = None  # (segment, fd), sender thread only
        self._closed = False
        self._memory: deque[tuple[bytes, int]] = deque()  # (data, lines) the disk refused
        self._memory_size = 0
        self._memory_lines = 0
        self.disk_error: str | None = None  # why appends go to memory, while they do
        self._outage_kept = 0
        self._outage_dropped = 0
        self._cursor_causes: set[str] = set()  # failures to save the cursor, logged once
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolError(f"spool {self.directory} is in use by another process") from exc
        try:
            self._recover()
        except BaseException:
            self._release()
            raise

    # -- public API -----------------------------------------------------------------

    @property
    def dropped_lines(self) -> int:
        """Lines deleted unsent because the spool was full (persisted across restarts)."""
        return self._dropped_lines

    def append(self, lines: Sequence[str]) -> None:
        """Append ``lines`` (no newlines inside) with one write; durable against a kill.

        When the disk refuses the write, the lines are kept in memory (bounded) and
        written ahead of later ones once it accepts writes again.
        """
        for line in lines:
            if "\n" in line:
                raise ValueError(f"spool lines cannot contain a newline: {line[:80]!r}")
        kept = [line for line in lines if line]
        if not kept:
            return
        data = ("\n".join(kept) + "\n").encode("utf-8")
        with self._lock:
            self._check_open()
            if self._memory:
                self._flush_memory()  # what was kept goes first
            if self._memory:
                self._remember(data, len(kept))
                return
            try:
                self._append_disk(data, len(kept))
            except OSError as exc:
                self._outage_started(exc)
                self._remember(data, len(kept))

    def read_batch(self, max_lines: int) -> Batch | None:
        """Up to ``max_lines`` of the oldest unacknowledged lines, or None when empty.

        Reading does not consume: until ``ack``, the same lines are returned again.
        """
        if max_lines <= 0:
            raise ValueError("max_lines must be positive")
        while True:
            with self._lock:
                self._check_open()
                self._advance()
                seq, start = self._cursor_seg, self._cursor_off
                limit = self._segments[seq].size
                if start >= limit and self._memory and self._flush_memory():
                    continue  # what the disk took from memory is next
                if start >= limit:
                    return None
            try:
                return self._read(seq, start, limit, max_lines)
            except FileNotFoundError:
                self._vanished(seq)  # usually dropped for room meanwhile: then a no-op

    def ack(self, batch: Batch) -> None:
        """Mark ``batch`` delivered; its segment is deleted once wholly delivered.

        A stale batch (already acknowledged, or dropped for room since it was read)
        is ignored.
        """
        pos = batch.position
        with self._lock:
            self._check_open()
            if (pos.segment, pos.start) != (self._cursor_seg, self._cursor_off):
                log.debug("ignoring the ack of a stale batch at %s", pos)
                return
            self._cursor_off = pos.end
            self._cursor_lines += pos.records
            self._advance()
            self._save_cursor()

    def pending_bytes(self) -> int:
        """Bytes appended and not yet acknowledged (on disk or kept in memory)."""
        with self._lock:
            return self._total_bytes - self._cursor_off + self._memory_size

    def pending_lines(self) -> int:
        """Lines appended and not yet acknowledged (exact, except corrupt lines found later)."""
        with self._lock:
            return self._total_lines - self._cursor_lines + self._memory_lines

    @property
    def memory_lines(self) -> int:
        """Lines kept in memory because the disk refused them."""
        return self._memory_lines

    def close(self) -> None:
        """Fsync the open segment, save the cursor and release the directory."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._memory:
                    self._flush_memory()
                if self._memory:
                    self._lose_memory()
                if self._write_fd >= 0:
                    os.fsync(self._write_fd)
                self._save_cursor()
            finally:
                self._release()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (the caller holds the lock unless noted) ---------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"spool {self.directory} is closed")

    def _path(self, seq: int) -> Path:
        return self.directory / segment_name(seq)

    def _active(self) -> int:
        return next(reversed(self._segments))

    def _release(self) -> None:
        for fd in (self._write_fd, self._read_fd[1] if self._read_fd else -1, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._write_fd = -1
        self._read_fd = None
        self._lock_fd = -1

    def _write_all(self, data: bytes, old_size: int) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._write_fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):  # never leave a torn line behind
                os.ftruncate(self._write_fd, old_size)
            raise

    def _append_disk(self, data: bytes, nlines: int) -> None:
        """Write one append to the open segment (rotating, making room); OSError if refused."""
        if self._segments[self._active()].size >= self.segment_bytes:
            self._rotate()
        if not self._make_room(len(data), nlines):
            return
        seg = self._segments[self._active()]  # making room may have rotated
        self._write_all(data, seg.size)
        seg.size += len(data)
        seg.lines += nlines
        self._total_bytes += len(data)
        self._total_lines += nlines
        if self.disk_error is not None and not self._memory:
            self._disk_recovered()  # not before there is room again

    def _remember(self, data: bytes, nlines: int) -> None:
        """Keep an append the disk refused; drop the oldest kept beyond ``memory_bytes``."""
        self._memory.append((data, nlines))
        self._memory_size += len(data)
        self._memory_lines += nlines
        self._outage_kept += nlines
        lost_lines = lost_bytes = 0
        while self._memory_size > self.memory_bytes:
            old, n = self._memory.popleft()
            self._memory_size -= len(old)
            self._memory_lines -= n
            lost_lines += n
            lost_bytes += len(old)
        if not lost_lines:
            return
        if self._outage_dropped == 0:
            log.warning(
                "spool %s: %d bytes wait in memory, the most kept; dropping the oldest "
                "lines kept until the disk takes writes again (counted in dropped_lines)",
                self.directory,
                self.memory_bytes,
            )
        self._outage_kept -= lost_lines
        self._outage_dropped += lost_lines
        self._dropped_lines += lost_lines
        self.dropped_bytes += lost_bytes
        self._save_cursor()

    def _flush_memory(self) -> bool:
        """Write what memory kept, oldest first, while the disk takes it; True if any went."""
        wrote = False
        while self._memory:
            data, n = self._memory[0]
            try:
                self._append_disk(data, n)
            except OSError:
                return wrote  # still refused: the outage is already logged
            self._memory.popleft()
            self._memory_size -= len(data)
            self._memory_lines -= n
            wrote = True
        self._disk_recovered()
        return wrote

    def _lose_memory(self) -> None:
        """Count and log the lines still in memory when the spool closes."""
        lost_lines, lost_bytes = self._memory_lines, self._memory_size
        self._memory.clear()
        self._memory_lines = self._memory_size = 0
        self._dropped_lines += lost_lines
        self.dropped_bytes += lost_bytes
        log.error(
            "spool %s: closing while the disk refuses writes (%s): %d line(s) kept in "
            "memory are lost (counted in dropped_lines)",
            self.directory,
            self.disk_error,
            lost_lines,
        )

    def _outage_started(self, exc: OSError) -> None:
        """Log the first failed write of an outage (once), naming the cause."""
        if self.disk_error is not None:
            return
        self.disk_error = _os_cause(exc)
        self._outage_kept = self._outage_dropped = 0
        log.error(
            "spool %s: %s; keeping new lines in memory (at most %d bytes) until the disk "
            "takes writes again",
            self.directory,
            self.disk_error,
            self.memory_bytes,
        )

    def _disk_recovered(self) -> None:
        """Log the end of an outage (once), with the lines kept and dropped.

        Only once the file system has room again: a write that fits in a file's last
        block on a full disk is no recovery, and would make the log flap.
        """
        if self.disk_error is None or not _has_room(self.directory):
            return
        log.warning(
            "spool %s: the disk takes writes again (after %s); wrote the %d line(s) kept "
            "in memory, dropped %d",
            self.directory,
            self.disk_error,
            self._outage_kept,
            self._outage_dropped,
        )
        self.disk_error = None
        self._outage_kept = self._outage_dropped = 0

    def _open_segment(self, seq: int) -> None:
        self._write_fd = os.open(
            self._path(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )

    def _rotate(self) -> int:
        """Fsync and close the open segment, start the next one; returns its number.

        Raises OSError with nothing changed when the old segment cannot be synced or
        the new one cannot be made.
        """
        seq = self._active() + 1
        os.fsync(self._write_fd)
        new_fd = os.open(
            self._path(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        with contextlib.suppress(OSError):
            os.close(self._write_fd)
        self._write_fd = new_fd
        self._segments[seq] = _Segment(0, 0)
        with contextlib.suppress(OSError):  # the next rotation syncs the folder again
            _fsync_dir(self.directory)
        self._advance()
        return seq

    def _advance(self) -> None:
        """Delete wholly acknowledged segments other than the open one; move the cursor."""
        active = self._active()
        while self._cursor_seg != active:
            done = self._segments[self._cursor_seg]
            if self._cursor_off < done.size:
                break
            del self._segments[self._cursor_seg]
            self._total_bytes -= done.size
            self._total_lines -= done.lines
            old = self._cursor_seg
            self._cursor_to_oldest()
            self._save_cursor()  # before the unlink: a crash in between leaves a passed segment
            with contextlib.suppress(FileNotFoundError):
                self._path(old).unlink()

    def _vanished(self, seq: int) -> None:
        """Forget segment ``seq`` if its file was deleted behind the spool's back."""
        with self._lock:
            if seq != self._cursor_seg or seq not in self._segments:
                return  # dropped for room: the cursor has already moved on
            if seq == self._active():
                self._rotate()
            seg = self._segments.pop(seq)
            lost_lines, lost_bytes = seg.lines - self._cursor_lines, seg.size - self._cursor_off
            self._total_bytes -= seg.size
            self._total_lines -= seg.lines
            self._dropped_lines += lost_lines
            self.dropped_bytes += lost_bytes
            self._cursor_to_oldest()
            self._save_cursor()
            log.warning(
                "spool %s: %s was deleted by something else; %d undelivered line(s) lost",
                self.directory,
                segment_name(seq),
                lost_lines,
            )

    def _cursor_to_oldest(self) -> None:
        self._cursor_seg, self._cursor_off, self._cursor_lines = next(iter(self._segments)), 0, 0

    def _make_room(self, nbytes: int, nlines: int) -> bool:
        """Drop the oldest segments until ``nbytes`` more fit; False if they never can."""
        if self._total_bytes + nbytes <= self.max_bytes:
            return True
        lost_lines = lost_bytes = 0
        while self._total_bytes + nbytes > self.max_bytes:
            if len(self._segments) == 1:
                if self._segments[self._active()].size == 0:
                    break
                self._rotate()
                continue
            seq = next(iter(self._segments))
            seg = self._segments.pop(seq)
            if seq == self._cursor_seg:
                lost_lines += seg.lines - self._cursor_lines
                lost_bytes += seg.size - self._cursor_off
            else:
                lost_lines += seg.lines
                lost_bytes += seg.size
            self._total_bytes -= seg.size
            self._total_lines -= seg.lines
            if seq == self._cursor_seg:
                self._cursor_to_oldest()
            with contextlib.suppress(FileNotFoundError):
                self._path(seq).unlink()
        fits = self._total_bytes + nbytes <= self.max_bytes
        if not fits:  # one append larger than the whole spool
            lost_lines += nlines
            lost_bytes += nbytes
        if lost_bytes == 0:  # rotating freed delivered data only
            return fits
        self._dropped_lines += lost_lines
        self.dropped_bytes += lost_bytes
        self._save_cursor()
        log.warning(
            "spool %s is full (max %d bytes): dropped the %d oldest undelivered line(s) "
            "(%d bytes); %d line(s) dropped in all",
            self.directory,
            self.max_bytes,
            lost_lines,
            lost_bytes,
            self._dropped_lines,
        )
        return fits

    def _save_cursor(self) -> None:
        """Replace the cursor file; a failure is logged once per cause, tried again next time."""
        state = {
            "segment": self._cursor_seg,
            "offset": self._cursor_off,
            "dropped_lines": self._dropped_lines,
            "dropped_bytes": self.dropped_bytes,
        }
        tmp = self.directory / (CURSOR_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, self.directory / CURSOR_FILE)
        except OSError as exc:
            cause = _os_cause(exc)
            if cause not in self._cursor_causes and self.disk_error is None:
                log.warning(
                    "spool %s: cannot save the cursor (%s); delivery goes on, and a restart "
                    "before it is saved would send some lines again (harmless: replays "
                    "overwrite); said once",
                    self.directory,
                    cause,
                )
            self._cursor_causes.add(cause)

    def _load_cursor(self) -> tuple[int, int]:
        path = self.directory / CURSOR_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            seg, off = int(state["segment"]), int(state["offset"])
            self._dropped_lines = int(state.get("dropped_lines", 0))
            self.dropped_bytes = int(state.get("dropped_bytes", 0))
        except FileNotFoundError:
            return 0, 0
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning(
                "spool %s: unreadable cursor (%s); resending from the oldest line", path, exc
            )
            return 0, 0
        return max(seg, 0), max(off, 0)

    def _recover(self) -> None:
        """Rebuild the state from the directory (called once, from ``__init__``)."""
        for stale in self.directory.glob(CURSOR_FILE + ".tmp"):
            stale.unlink()
        seqs = sorted(
            int(p.name[: -len(SEGMENT_SUFFIX)])
            for p in self.directory.glob("*" + SEGMENT_SUFFIX)
            if p.name[: -len(SEGMENT_SUFFIX)].isdigit()
        )
        cursor_seg, cursor_off = self._load_cursor()
        distrust = self._distrust(seqs, cursor_seg, cursor_off)
        if distrust is not None:
            log.warning(
                "spool %s: %s; not trusting it: nothing is deleted and every line is sent "
                "again from %s (replays overwrite)",
                self.directory,
                distrust,
                segment_name(seqs[0]),
            )
            cursor_seg, cursor_off = seqs[0], 0
        for seq in seqs:
            if seq < cursor_seg:  # delivered; its deletion did not complete
                self._path(seq).unlink()
                continue
            size, lines = _repair(self._path(seq), self.directory)
            self._segments[seq] = _Segment(size, lines)
        if not self._segments:
            self._segments[max(cursor_seg, 1)] = _Segment(0, 0)
        first = next(iter(self._segments))
        if first != cursor_seg:  # the cursor's segment is gone: start at the oldest left
            cursor_seg, cursor_off = first, 0
        size = self._segments[first].size
        cursor_off = _line_start(self._path(first), min(cursor_off, size), size)
        self._cursor_seg, self._cursor_off = cursor_seg, cursor_off
        self._cursor_lines = _count_lines(self._path(first), cursor_off)
        self._total_bytes = sum(s.size for s in self._segments.values())
        self._total_lines = sum(s.lines for s in self._segments.values())
        active = self._active()
        if self._segments[active].size >= self.segment_bytes:
            active += 1
            self._segments[active] = _Segment(0, 0)
        self._open_segment(active)
        self._advance()
        self._save_cursor()

    def _distrust(self, seqs: list[int], seg: int, offset: int) -> str | None:
        """Why the saved cursor cannot be right for the segments on disk, or None."""
        if not seqs or seg < seqs[0]:
            return None  # nothing there, or its segment was deleted after delivery
        first, last = segment_name(seqs[0]), segment_name(seqs[-1])
        found = f"{len(seqs)} segment(s) on disk, {first} to {last}"
        if seg not in seqs:
            where = "past the newest segment" if seg > seqs[-1] else "to a missing segment"
            return f"the cursor (segment {seg}, offset {offset}) points {where} ({found})"
        size = self._path(seg).stat().st_size
        if offset > size:
            return (
                f"the cursor (segment {seg}, offset {offset}) points past the end of "
                f"{segment_name(seg)} ({size} bytes; {found})"
            )
        return None

    def _read(self, seq: int, start: int, limit: int, max_lines: int) -> Batch:
        """Read whole lines of segment ``seq`` in [start, limit); no lock held."""
        fd = self._reader_fd(seq)
        buf = b""
        offset = start
        records: list[bytes] = []
        while offset < limit and len(records) < max_lines:
            chunk = os.pread(fd, min(_READ_CHUNK, limit - offset), offset)
            if not chunk:
                break  # truncated under us: only what was read counts
            offset += len(chunk)
            parts = (buf + chunk).split(b"\n", max_lines - len(records))
            if len(parts) > max_lines - len(records):  # enough records: leave the rest
                offset -= len(parts[-1])
                records.extend(parts[:-1])
                buf = b""
                break
            records.extend(parts[:-1])
            buf = parts[-1]
        offset -= len(buf)  # an incomplete tail is not part of the batch
        lines: list[str] = []
        for raw in records:
            text = _decode(raw)
            if text is None:
                log.warning(
                    "spool %s: skipped a corrupt line in %s", self.directory, segment_name(seq)
                )
            elif text:
                lines.append(text)
        return Batch(tuple(lines), SpoolPosition(seq, start, offset, len(records)))

    def _reader_fd(self, seq: int) -> int:
        if self._read_fd is not None:
            if self._read_fd[0] == seq:
                return self._read_fd[1]
            os.close(self._read_fd[1])
            self._read_fd = None
        fd = os.open(self._path(seq), os.O_RDONLY | os.O_CLOEXEC)
        self._read_fd = (seq, fd)
        return fd


def _has_room(directory: Path) -> bool:
    """Whether the file system holding ``directory`` has ``RECOVERY_ROOM_BYTES`` free."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return True  # cannot tell: the writes that succeed say enough
    return st.f_bavail * st.f_frsize >= RECOVERY_ROOM_BYTES


def _os_cause(exc: OSError) -> str:
    """A failed write in words: disk full named as such, with the errno's name."""
    name = errno.errorcode.get(exc.errno or 0, "error")
    what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "write failed"
    where = f" at {exc.filename}" if exc.filename else ""
    return f"{what} ({name}: {exc.strerror}{where})"


def _decode(raw: bytes) -> str | None:
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _repair(path: Path, directory: Path) -> tuple[int, int]:
    """Truncate a torn last line off ``path``; returns (size, lines)."""
    with path.open("r+b") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning(
                "spool %s: removed an incomplete last line (%d bytes) from %s",
                directory,
                len(data) - end,
                path.name,
            )
            f.truncate(end)
        return end, data.count(b"\n", 0, end)


def _line_start(path: Path, offset: int, size: int) -> int:
    """``offset`` if a line starts there, else the start of the line holding it."""
    if offset == 0:
        return 0
    with path.open("rb") as f:
        data = f.read(offset)
    if data[-1:] == b"\n":
        return offset
    start = data.rfind(b"\n") + 1
    log.warning(
        "spool %s: the cursor pointed inside a line; sending that line again from offset %d",
        path,
        start,
    )
    return start


def _count_lines(path: Path, end: int) -> int:
    if end == 0:
        return 0
    with path.open("rb") as f:
        return f.read(end).count(b"\n")
