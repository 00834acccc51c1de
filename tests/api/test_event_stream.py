from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from modelyard.client import Client
from modelyard.errors import InvalidInput
from modelyard.events.records import Event
from modelyard.testing import wait_for


def test_the_stream_pushes_new_events_and_resumes_after_an_id(
    admin: Client, tmp_path: Path
) -> None:
    admin.create_namespace("team")
    start = max(e.id for e in admin.events(after=0, follow=False))
    seen: list[Event] = []

    def listen() -> None:
        for event in admin.events(after=start, types=["model.*"]):
            seen.append(event)
            if event.type == "model.alias.moved":
                return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    (tmp_path / "m.bin").write_bytes(b"m")
    admin.push("team/m", tmp_path / "m.bin")
    wait_for(lambda: len(seen) == 1)  # the stream is live now: the next one must be pushed
    admin.set_alias("team/m@1", "production")
    listener.join(10)
    assert [e.type for e in seen] == ["model.version.committed", "model.alias.moved"]
    assert seen[1].data == {
        "kind": "model",
        "namespace": "team",
        "name": "m",
        "alias": "production",
        "version": 1,
        "previous": None,
    }

    resumed = list(admin.events(after=seen[0].id, follow=False))
    assert [e.id for e in resumed] == [seen[1].id]
    answer = admin.http.get(
        "/events", params={"follow": False}, headers={"Last-Event-ID": str(seen[0].id)}
    )
    assert f"id: {seen[1].id}" in answer.text and f"id: {seen[0].id}\n" not in answer.text


def test_follow_false_without_a_start_ends_after_the_whole_backlog(
    admin: Client, tmp_path: Path
) -> None:
    """``GET /api/v1/events?follow=false``: every event the key can read, then the end."""
    admin.create_namespace("team")
    (tmp_path / "m.bin").write_bytes(b"m")
    admin.push("team/m", tmp_path / "m.bin")
    answer = admin.http.get("/events", params={"follow": "false"})
    assert answer.status_code == 200
    types = [
        line[len("event: ") :] for line in answer.text.splitlines() if line.startswith("event: ")
    ]
    assert types[-2:] == ["namespace.created", "model.version.committed"], types
    # with type and last, it is the newest N of those types, as before
    answer = admin.http.get("/events", params={"follow": "false", "type": "namespace.*", "last": 1})
    assert answer.text.count("event: ") == 1 and "event: namespace.created" in answer.text


def test_a_type_filter_no_event_type_matches_is_refused(admin: Client) -> None:
    # Followed, it would wait forever for an event that cannot come: refused before streaming.
    with pytest.raises(InvalidInput, match=re.escape("'modle.*' matches no event type: did you")):
        list(admin.events(after=0, types=["modle.*"], follow=False))
