"""The on-disk spool: round trip, exact recovery, torn lines, SIGKILL, bounds, threads,
an untrusted cursor, a full disk."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exporters.spool import Spool, SpoolError
from tests.tmpfs import fill, small_tmpfs

ROOT = Path(__file__).resolve().parents[1]


def numbered(start: int, count: int, pad: int = 0) -> list[str]:
    return [f"m,host=h v={i}i {i}{'x' * pad}" for i in range(start, start + count)]


def drain(spool: Spool, max_lines: int = 1000) -> list[str]:
    out: list[str] = []
    while (batch := spool.read_batch(max_lines)) is not None:
        out.extend(batch.lines)
        spool.ack(batch)
    return out


def test_append_read_ack_round_trip(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096) as spool:
        spool.append(numbered(0, 100))
        spool.append(numbered(100, 100))
        assert spool.pending_lines() == 200
        assert spool.pending_bytes() > 0
        batch = spool.read_batch(150)
        assert batch is not None and list(batch.lines) == numbered(0, 150)
        again = spool.read_batch(150)  # not consumed until acknowledged
        assert again is not None and again.lines == batch.lines
        spool.ack(batch)
        spool.ack(batch)  # a second ack of the same batch is ignored
        assert spool.pending_lines() == 50
        assert drain(spool) == numbered(150, 50)
        assert spool.read_batch(10) is None
        assert spool.pending_lines() == 0 and spool.pending_bytes() == 0


def test_segments_rotate_and_delivered_ones_are_deleted(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1000) as spool:
        for i in range(50):
            spool.append(numbered(i * 10, 10))
        assert len(list(tmp_path.glob("*.seg"))) > 5
        assert drain(spool, 7) == numbered(0, 500)
        assert len(list(tmp_path.glob("*.seg"))) == 1  # only the open segment is left


def test_reopen_resumes_exactly_after_the_last_ack(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=500)
    spool.append(numbered(0, 100))
    seen: list[str] = []
    for _ in range(3):
        batch = spool.read_batch(17)
        assert batch is not None
        seen.extend(batch.lines)
        spool.ack(batch)
    unacked = spool.read_batch(17)  # read, not acknowledged: must come back
    assert unacked is not None
    spool.close()

    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=500)
    assert spool.pending_lines() == 100 - 51
    spool.append(numbered(100, 5))
    seen.extend(drain(spool))
    spool.close()
    assert seen == numbered(0, 105)


def test_a_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20), pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path, max_bytes=1 << 20)


def test_a_torn_last_line_is_not_replayed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        spool.append(numbered(0, 3))
    (segment,) = tmp_path.glob("*.seg")
    with segment.open("ab") as f:
        f.write(b"m,host=h v=3i 3\nm,host=h v=")  # one whole line, then a torn one
    with caplog.at_level(logging.WARNING, logger="sci_agent.spool"):
        spool = Spool(tmp_path, max_bytes=1 << 20)
    assert "incomplete last line" in caplog.text
    spool.append(numbered(4, 1))  # appends after the cut, not glued to the torn tail
    assert drain(spool) == numbered(0, 5)
    spool.close()


def test_nul_garbage_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        spool.append(numbered(0, 2))
    (segment,) = tmp_path.glob("*.seg")
    with segment.open("ab") as f:  # what a power loss can leave at a file's end
        f.write(b"\x00\x00\x00\x00\n")
    with (
        caplog.at_level(logging.WARNING, logger="sci_agent.spool"),
        Spool(tmp_path, max_bytes=1 << 20) as spool,
    ):
        spool.append(numbered(2, 1))
        assert drain(spool) == numbered(0, 3)
    skipped = [r for r in caplog.records if "skipped a corrupt line" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].levelname == "WARNING"


def test_a_cursor_inside_a_line_sends_that_line_again(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        spool.append(numbered(0, 3))
        batch = spool.read_batch(1)
        assert batch is not None
        spool.ack(batch)
    cursor = tmp_path / "cursor"
    cursor.write_text(cursor.read_text().replace('"offset": 16', '"offset": 20'))
    with Spool(tmp_path, max_bytes=1 << 20) as spool:  # an untrusted cursor skips nothing
        assert drain(spool) == numbered(1, 2)


CHILD = """
import os, signal, sys
from pathlib import Path
from exporters.spool import Spool
if sys.argv[2] == "kill-inside-a-write":  # the kill lands after part of an append's bytes
    write, calls = os.write, [0]
    def torn_write(fd, data):
        calls[0] += 1
        if calls[0] == 20:
            write(fd, bytes(data[:4000]))
            os.kill(os.getpid(), signal.SIGKILL)
        return write(fd, data)
    os.write = torn_write
spool = Spool(Path(sys.argv[1]), max_bytes=1 << 30, segment_bytes=64 << 10)
n = 0
while True:
    spool.append([f"m,host=h seq={i}i {i} " + "p" * 60 for i in range(n, n + 500)])
    n += 500
    if n == 5000:
        print("ready", flush=True)
"""


@pytest.mark.parametrize("kill", ["kill-from-outside", "kill-inside-a-write"])
def test_sigkill_mid_append_leaves_a_clean_prefix(
    tmp_path: Path, kill: str, caplog: pytest.LogCaptureFixture
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), kill],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"ready"
    if kill == "kill-from-outside":
        time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
    assert child.wait(5) == -signal.SIGKILL

    pattern = re.compile(r"m,host=h seq=(\d+)i (\d+) p{60}")
    with (
        caplog.at_level(logging.WARNING, logger="sci_agent.spool"),
        Spool(tmp_path, max_bytes=1 << 30) as spool,
    ):
        lines = drain(spool, 5000)
    assert len(lines) >= 5000
    for expected, line in enumerate(lines):
        match = pattern.fullmatch(line)
        assert match is not None, f"garbage line {expected}: {line[:80]!r}"
        assert int(match[1]) == int(match[2]) == expected  # no gap, no duplicate
    if kill == "kill-inside-a-write":
        line_bytes = len(f"m,host=h seq=9500i 9500 {'p' * 60}\n")
        assert len(lines) == 19 * 500 + 4000 // line_bytes  # whole lines of the torn append
        assert "incomplete last line" in caplog.text


def test_bounded_spool_drops_the_oldest_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    total = 400
    with (
        caplog.at_level(logging.WARNING, logger="sci_agent.spool"),
        Spool(tmp_path, max_bytes=3000, segment_bytes=1000) as spool,
    ):
        for i in range(0, total, 10):
            spool.append(numbered(i, 10, pad=10))
            assert spool.pending_bytes() <= 3000
        assert spool.dropped_lines > 0 and spool.dropped_bytes > 0
        kept = drain(spool)
        dropped = spool.dropped_lines
    assert "dropped the" in caplog.text and "oldest" in caplog.text
    assert kept == numbered(total - len(kept), len(kept), pad=10)  # the newest, in order
    assert dropped + len(kept) == total
    with Spool(tmp_path, max_bytes=3000, segment_bytes=1000) as spool:
        assert spool.dropped_lines == dropped  # persisted


def test_dropping_a_partly_acknowledged_segment_counts_only_the_rest(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=2000, segment_bytes=1000) as spool:
        spool.append(numbered(0, 40))  # ~680 bytes in segment 1
        batch = spool.read_batch(10)
        assert batch is not None
        spool.ack(batch)
        for i in range(40, 200, 20):
            spool.append(numbered(i, 20))
        kept = drain(spool)
        assert spool.dropped_lines + len(kept) == 200 - 10
        assert kept == numbered(200 - len(kept), len(kept))


def test_a_batch_dropped_while_in_flight_is_not_acknowledged_twice(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=2000, segment_bytes=1000) as spool:
        spool.append(numbered(0, 60))
        in_flight = spool.read_batch(10)
        assert in_flight is not None
        for i in range(60, 300, 20):
            spool.append(numbered(i, 20))
        spool.ack(in_flight)  # its segment is gone: a stale ack is ignored
        kept = drain(spool)
        assert spool.dropped_lines + len(kept) == 300
        assert kept == numbered(300 - len(kept), len(kept))


def test_lines_with_newlines_are_refused(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as spool, pytest.raises(ValueError):
        spool.append(["a 1\nb 2"])


def test_one_appender_and_one_reader_thread_deliver_everything_once_in_order(
    tmp_path: Path,
) -> None:
    total = 20_000
    received: list[str] = []
    with Spool(tmp_path, max_bytes=1 << 26, segment_bytes=8192) as spool:
        done = threading.Event()

        def appender() -> None:
            for i in range(0, total, 10):
                spool.append(numbered(i, 10))
            done.set()

        def reader() -> None:
            while len(received) < total:
                batch = spool.read_batch(333)
                if batch is None:
                    if done.is_set() and spool.pending_lines() == 0:
                        break
                    time.sleep(0.0005)
                    continue
                received.extend(batch.lines)
                spool.ack(batch)

        threads = [threading.Thread(target=appender), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert spool.pending_lines() == 0
    assert received == numbered(0, total)
    assert len(list(tmp_path.glob("*.seg"))) == 1


def test_an_append_larger_than_the_spool_is_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="at least segment_bytes"):
        Spool(tmp_path, max_bytes=100, segment_bytes=1000)
    with (
        caplog.at_level(logging.WARNING, logger="sci_agent.spool"),
        Spool(tmp_path, max_bytes=1000, segment_bytes=1000) as spool,
    ):
        spool.append(numbered(0, 5))
        spool.append(numbered(5, 100))
        spool.append(numbered(105, 5))
        assert drain(spool) == numbered(105, 5)
        assert spool.dropped_lines == 105
    assert "dropped" in caplog.text


def test_a_segment_deleted_by_hand_is_counted_not_looped_on(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1000) as spool:
        spool.append(numbered(0, 100))  # segment 1, over segment_bytes
        spool.append(numbered(100, 10))  # segment 2, the open one
        sorted(tmp_path.glob("*.seg"))[0].unlink()
        assert drain(spool) == numbered(100, 10)
        assert spool.dropped_lines == 100
        sorted(tmp_path.glob("*.seg"))[0].unlink()  # now the open segment
        spool.append(numbered(110, 5))  # lands in the deleted inode
        got = drain(spool)  # from the reader's open descriptor, or counted as lost
        assert got == numbered(110, 5) or (got == [] and spool.dropped_lines == 105)
        spool.append(numbered(115, 100))
        assert drain(spool) == numbered(115, 100)


# -- a cursor that cannot be trusted; a full disk -----------------------------------------


def interval_lines(i: int) -> list[str]:
    """The points of interval ``i``: 6 lines with the same timestamp."""
    return [f"m,host=h,part={k} v={i}i {1_700_000_000 + i * 5}" for k in range(6)]


def write_intervals(directory: Path, n: int, acked: int) -> list[str]:
    """A closed spool holding ``n`` intervals over several segments, ``acked`` delivered."""
    with Spool(directory, max_bytes=1 << 20, segment_bytes=600) as spool:
        for i in range(n):
            spool.append(interval_lines(i))
        delivered = 0
        while delivered < acked * 6:
            batch = spool.read_batch(acked * 6 - delivered)
            assert batch is not None
            spool.ack(batch)
            delivered += len(batch.lines)
    return [line for i in range(n) for line in interval_lines(i)]


@pytest.mark.parametrize(
    ("where", "cursor"),
    [
        ("past the newest segment", lambda segs: {"segment": segs[-1] + 3, "offset": 0}),
        ("past the newest segment", lambda segs: {"segment": segs[-1] + 1, "offset": 4}),
        ("to a missing segment", lambda segs: {"segment": segs[1] + 1, "offset": 10}),
        ("past the end of", lambda segs: {"segment": segs[-1], "offset": 1 << 20}),
    ],
)
def test_a_cursor_it_cannot_trust_deletes_nothing_and_resends_all(
    tmp_path: Path,
    where: str,
    cursor: Callable[[list[int]], dict[str, int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    everything = write_intervals(tmp_path, n=18, acked=0)
    segments = sorted(tmp_path.glob("*.seg"))
    seqs = [int(p.stem) for p in segments]
    if where == "to a missing segment":  # the cursor's segment deleted by hand
        segments.pop(2).unlink()
        everything = [line for p in segments for line in p.read_text().splitlines()]
        seqs = [int(p.stem) for p in segments]
    assert len(seqs) >= 4
    (tmp_path / "cursor").write_text(json.dumps(cursor(seqs)))
    with caplog.at_level(logging.WARNING, logger="sci_agent.spool"):
        spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=600)
    assert all(p.exists() for p in segments)  # nothing deleted
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"the cursor (segment {cursor(seqs)['segment']}" in line and where in line
    assert segments[0].name in line and "nothing is deleted" in line
    assert drain(spool) == everything  # every interval sent again
    spool.close()


def test_a_trusted_cursor_still_skips_what_was_delivered(tmp_path: Path) -> None:
    everything = write_intervals(tmp_path, n=18, acked=7)
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=600) as spool:
        assert drain(spool) == everything[7 * 6 :]


def test_a_full_disk_keeps_appends_in_memory_and_writes_them_when_space_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_tmpfs(tmp_path / "fs") as fs:
        spool = Spool(fs / "spool", max_bytes=1 << 20, segment_bytes=64 << 10)
        spool.append(interval_lines(0))
        filler = fill(fs)
        with caplog.at_level(logging.INFO, logger="sci_agent.spool"):
            for i in range(1, 31):  # an outage of 30 intervals
                spool.append(interval_lines(i))
            kept = spool.memory_lines  # the first appends may fit in the last block
            assert kept >= 10 * 6 and spool.pending_lines() == 31 * 6
            assert spool.read_batch(1000) is not None  # what is on disk can still go out
            filler.unlink()
            for i in range(31, 36):
                spool.append(interval_lines(i))
        assert spool.memory_lines == 0 and spool.dropped_lines == 0
        assert drain(spool) == [line for i in range(36) for line in interval_lines(i)]
        spool.close()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    errors = [m for level, m in messages if level >= logging.ERROR]
    assert len(errors) == 1 and "disk full (ENOSPC" in errors[0] and str(fs) in errors[0]
    (recovered,) = [m for _, m in messages if "wrote the" in m]
    assert f"wrote the {kept} line(s) kept in memory, dropped 0" in recovered
    assert len(messages) == 2  # no flapping


def test_a_long_disk_full_outage_drops_the_oldest_kept_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def size(i: int) -> int:
        return len(("\n".join(interval_lines(i)) + "\n").encode())

    chunk = size(10)  # intervals 10 and up: lines of one length
    with small_tmpfs(tmp_path / "fs") as fs:
        spool = Spool(fs / "spool", max_bytes=1 << 20, memory_bytes=5 * chunk)
        filler = fill(fs)  # the open segment is empty: no block to squeeze into
        with caplog.at_level(logging.INFO, logger="sci_agent.spool"):
            for i in range(30):
                spool.append(interval_lines(i))
            filler.unlink()
            spool.append(interval_lines(30))
        assert spool.dropped_lines == 25 * 6 and spool.dropped_bytes == sum(map(size, range(25)))
        assert drain(spool) == [line for i in range(25, 31) for line in interval_lines(i)]
        spool.close()
        with Spool(fs / "spool", max_bytes=1 << 20) as again:  # the count is persisted
            assert again.dropped_lines == 25 * 6
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "disk full (ENOSPC" in errors[0]
    assert "wrote the 30 line(s) kept in memory, dropped 150" in caplog.text
    assert caplog.text.count("dropping the oldest") == 1


def test_lines_still_in_memory_at_close_are_counted_as_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_tmpfs(tmp_path / "fs") as fs:
        spool = Spool(fs / "spool", max_bytes=1 << 20)
        fill(fs)
        spool.append(interval_lines(0))
        with caplog.at_level(logging.ERROR, logger="sci_agent.spool"):
            spool.close()
        assert spool.dropped_lines == 6
    assert "6 line(s) kept in memory are lost" in caplog.text
