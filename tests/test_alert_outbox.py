"""The alert outbox: durable, ordered per alert, superseding, expiring, thread-safe, and
a corrupt file moved aside instead of a crash."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from agent.alerts.model import RESOLVED, new_message_id
from agent.alerts.outbox import Outbox
from tests.test_alert_formats import T0, notification


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    box = Outbox(tmp_path / "alerts" / "outbox.db")
    yield box  # type: ignore[misc]
    box.close()


def test_put_is_on_disk_before_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    n = notification()
    box.put(n)
    # Another connection (another process would do the same) sees it at once.
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT id FROM outbox").fetchall() == [(n.id,)]
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other.close()
    box.close()
    again = Outbox(path)
    assert again.due("hook", T0) == [n]
    again.close()


def test_due_oldest_first_only_when_its_time_came(outbox: Outbox) -> None:
    a = notification(key="a", created_at=T0)
    b = notification(key="b", created_at=T0 + 1)
    c = notification(key="c", created_at=T0 + 2, webhook="other")
    for n in (b, a, c):
        outbox.put(n)
    assert outbox.due("hook", T0 - 1) == []
    assert outbox.due("hook", T0 + 5) == [a, b]
    assert outbox.due("hook", T0 + 5, limit=1) == [a]
    outbox.failed(a.id, T0 + 100, "HTTP 503")
    assert outbox.attempts(a.id) == 1
    assert outbox.due("hook", T0 + 5) == [b]
    assert outbox.next_at("hook") == T0 + 1
    outbox.delivered(b.id)
    assert outbox.next_at("hook") == T0 + 100
    assert outbox.due("hook", T0 + 100) == [a]
    assert outbox.pending("hook") == 1 and outbox.pending() == 2 and outbox.pending("x") == 0
    outbox.delivered("msg_unknown")  # ignored


def test_a_resolved_never_overtakes_its_firing(outbox: Outbox) -> None:
    firing = notification()
    gone = dataclasses.replace(
        firing, id=new_message_id(), state=RESOLVED, ended_at=T0 + 10, created_at=T0 + 10
    )
    other = notification(key="other-alert", created_at=T0 + 11)
    outbox.put(firing)
    outbox.put(gone)
    outbox.put(other)
    outbox.failed(firing.id, T0 + 60, "timed out")  # the firing one is backing off
    assert outbox.due("hook", T0 + 20) == [other]  # the resolved one waits behind it
    assert outbox.next_at("hook") == T0 + 11  # not the resolved one's time (a busy loop)
    outbox.delivered(other.id)
    assert outbox.next_at("hook") == T0 + 60
    assert outbox.due("hook", T0 + 60) == [firing]
    outbox.delivered(firing.id)
    assert outbox.due("hook", T0 + 60) == [gone]


def test_supersede_keeps_only_the_newest_of_an_alert(outbox: Outbox) -> None:
    first = notification(created_at=T0)
    repost = notification(created_at=T0 + 60, reminder=True)
    other_hook = notification(webhook="other")
    outbox.put(first)
    outbox.put(other_hook)
    outbox.put(repost, supersede=True)
    assert outbox.due("hook", T0 + 60) == [repost]
    assert outbox.pending() == 2  # the other webhook's copy stays


def test_expire_removes_and_returns_the_old(outbox: Outbox) -> None:
    old = notification(key="a", created_at=T0)
    young = notification(key="b", created_at=T0 + 50)
    outbox.put(old)
    outbox.put(young)
    assert outbox.expire(T0 + 90, max_age_s=60) == [old]
    assert outbox.expire(T0 + 90, max_age_s=60) == []
    assert outbox.due("hook", T0 + 90) == [young]


def test_concurrent_puts_from_threads(outbox: Outbox) -> None:
    def put_many(i: int) -> None:
        for j in range(25):
            outbox.put(notification(key=f"k{i}-{j}"))

    threads = [threading.Thread(target=put_many, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outbox.pending("hook") == 100


def test_a_corrupt_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database, just garbage " * 200)
    with caplog.at_level(logging.ERROR, "sci_agent.alerts"):
        box = Outbox(path)
    aside = list(tmp_path.glob("outbox.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    assert "moved the unreadable file" in caplog.text
    n = notification()
    box.put(n)
    assert box.due("hook", T0) == [n]
    box.close()


def test_a_file_damaged_while_open_is_moved_aside_and_put_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    for i in range(50):
        box.put(notification(key=f"k{i}", summary="x" * 500))
    box.close()  # the last connection checkpoints the WAL into the file
    # Keep the header page, overwrite the rest: the tables' pages are garbage.
    raw = path.read_bytes()
    assert len(raw) > 8192, "the checkpointed file should hold the rows"
    path.write_bytes(raw[:4096] + b"\xff" * (len(raw) - 4096))
    with caplog.at_level(logging.ERROR, "sci_agent.alerts"):
        box = Outbox(path)
        n = notification(key="after")
        box.put(n)
    assert list(tmp_path.glob("outbox.db.corrupt-*"))
    assert box.due("hook", T0 + 1, limit=100) == [n]
    box.close()


def test_an_unusable_place_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    with caplog.at_level(logging.ERROR, "sci_agent.alerts"):
        box = Outbox(blocker / "outbox.db")
    assert "in memory" in caplog.text
    n = notification()
    box.put(n)
    assert box.due("hook", T0) == [n]
    box.close()
