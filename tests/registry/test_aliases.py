from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from modelyard.client import Client
from modelyard.errors import InvalidInput, NotFound


@pytest.fixture
def two_versions(admin: Client, tmp_path: Path) -> Client:
    admin.create_namespace("team")
    for n in (1, 2):
        (tmp_path / f"m{n}.bin").write_bytes(f"model {n}".encode())
        admin.push("team/clf", tmp_path / f"m{n}.bin")
    return admin


def test_alias_to_missing_version_is_refused_and_changes_nothing(two_versions: Client) -> None:
    two_versions.set_alias("team/clf@1", "production")
    with pytest.raises(NotFound, match="@7"):
        two_versions.set_alias("team/clf@7", "production")
    assert two_versions.get_version("team/clf@production").number == 1
    assert len(two_versions.alias_history("team/clf", "production")) == 1


@pytest.mark.parametrize("alias", ["latest", "3abc", "../x", "Prod", "", "a" * 64])
def test_bad_alias_names_are_refused(two_versions: Client, alias: str) -> None:
    with pytest.raises((InvalidInput, NotFound)):
        two_versions.request(
            "PUT", f"/namespaces/team/models/clf/aliases/{alias}", json={"version": 1}
        )
    assert two_versions.alias_history("team/clf") == []


def test_delete_alias_keeps_history(two_versions: Client) -> None:
    two_versions.set_alias("team/clf@2", "candidate")
    two_versions.delete_alias("team/clf", "candidate")
    with pytest.raises(NotFound):
        two_versions.get_version("team/clf@candidate")
    assert [(c.version, c.previous) for c in two_versions.alias_history("team/clf")] == [
        (2, None),
        (None, 2),
    ]


def test_concurrent_alias_moves_leave_one_consistent_answer(two_versions: Client) -> None:
    errors: list[Exception] = []

    def move(version: int) -> None:
        try:
            for _ in range(10):
                two_versions.set_alias(f"team/clf@{version}", "production")
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=move, args=(v,)) for v in (1, 2, 1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = two_versions.alias_history("team/clf", "production")
    assert len(history) == 40
    # Each recorded move starts from where the previous one ended: no lost update.
    for before, after in itertools.pairwise(history):
        assert after.previous == before.version
    assert two_versions.get_version("team/clf@production").number == history[-1].version
