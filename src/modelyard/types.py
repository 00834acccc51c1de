"""Validated domain values shared by every subsystem.

One naming rule everywhere (namespaces, models, datasets, aliases, keys' names): a DNS-1123 label,
1 to 63 characters of lowercase letters, digits and ``-``, starting and ending with a letter or
digit. It is what Kubernetes accepts for object names, so the same names render to Kubernetes later,
and it cannot express a path (``/``, ``..``) or hide in a URL.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from modelyard.errors import InvalidInput

NAME_RULE = (
    "1 to 63 characters: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit"
)
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NUMBER = re.compile(r"^[0-9]{1,9}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_PATH_LENGTH = 1024
MAX_SEGMENT_BYTES = 255
MAX_FILE_SIZE = 2**63 - 1

ArtifactKind = Literal["model", "dataset"]
ARTIFACT_KINDS: tuple[ArtifactKind, ...] = ("model", "dataset")


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` when it follows the naming rule, else raise a message saying the rule."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidInput(f"invalid {what} {value!r}: use {NAME_RULE}", field=what)
    return value


def check_alias(value: str) -> str:
    """Aliases follow the naming rule and start with a letter, so ``@3`` always means version 3."""
    check_name(value, "alias")
    if not value[0].isalpha():
        raise InvalidInput(
            f"invalid alias {value!r}: an alias starts with a letter (a number names a version)",
            field="alias",
        )
    if value == "latest":
        raise InvalidInput("'latest' is reserved: it always means the newest committed version")
    return value


def check_digest(value: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise InvalidInput(
            f"invalid sha256 {value!r}: give 64 lowercase hex digits", field="sha256"
        )
    return value


def check_path(value: str) -> str:
    """A file's path inside a version: relative, POSIX, no empty, '.' or '..' segment."""
    if not isinstance(value, str) or not value or len(value) > MAX_PATH_LENGTH:
        raise InvalidInput(
            f"invalid file path {value!r}: "
            f"give a relative path of 1 to {MAX_PATH_LENGTH} characters"
        )
    parts = value.split("/")
    bad = (
        value.startswith("/")
        or "\\" in value
        or _CONTROL.search(value) is not None
        or any(part in ("", ".", "..") for part in parts)
        or any(len(part.encode()) > MAX_SEGMENT_BYTES for part in parts)
    )
    if bad:
        raise InvalidInput(
            f"invalid file path {value!r}: use a relative path with '/' separators, no "
            f"empty, '.' or '..' segments, no control characters, segments of at most "
            f"{MAX_SEGMENT_BYTES} bytes"
        )
    return value


def is_version_number(ref: str) -> bool:
    """ASCII digits only (``'²'.isdigit()`` is true), small enough for the database."""
    return _NUMBER.match(ref) is not None


def check_text(value: str, what: str) -> str:
    """Free text (descriptions, tag values) may not hold NUL: PostgreSQL refuses it."""
    if "\x00" in value:
        raise InvalidInput(f"{what} holds a NUL character: remove it")
    return value


class Role(enum.StrEnum):
    """What a key may do in one namespace.

    ``viewer`` < ``editor`` < ``admin`` each include the one before; ``invoker`` may only call
    inference endpoints (and read predictions) through the gateway; ``producer`` may also send
    events to the namespace's streams, as may ``editor`` and ``admin``. Every role may invoke.
    """

    INVOKER = "invoker"
    PRODUCER = "producer"
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        if needed is Role.INVOKER:
            return True
        if needed is Role.PRODUCER:
            return self in (Role.PRODUCER, Role.EDITOR, Role.ADMIN)
        if self in (Role.INVOKER, Role.PRODUCER):
            return False
        order = (Role.VIEWER, Role.EDITOR, Role.ADMIN)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class FileEntry:
    """One file of a version: where it sits in the version, and what its bytes must hash to."""

    path: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        check_path(self.path)
        check_digest(self.sha256)
        if not isinstance(self.size, int) or not 0 <= self.size <= MAX_FILE_SIZE:
            raise InvalidInput(
                f"invalid size {self.size!r} for {self.path}: give bytes from 0 to {MAX_FILE_SIZE}"
            )


@dataclass(frozen=True)
class ModelRef:
    """``namespace/name[@ref]`` where ref is a version number, an alias or ``latest``.

    >>> ModelRef.parse("vision/resnet@production").ref
    'production'
    """

    namespace: str
    name: str
    ref: str = "latest"

    def __post_init__(self) -> None:
        check_name(self.namespace, "namespace")
        check_name(self.name, "name")
        if not is_version_number(self.ref) and self.ref != "latest":
            check_alias(self.ref)

    @classmethod
    def parse(cls, text: str, default_namespace: str | None = None) -> ModelRef:
        body, _, ref = text.partition("@")
        namespace, slash, name = body.rpartition("/")
        if not slash:
            if default_namespace is None:
                raise InvalidInput(
                    f"invalid reference {text!r}: write namespace/name[@version|alias]"
                )
            namespace = default_namespace
        return cls(namespace, name, ref or "latest")

    @property
    def version(self) -> int | None:
        return int(self.ref) if is_version_number(self.ref) else None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}@{self.ref}"


class Record(BaseModel):
    """Base of the immutable records services return and the API serialises as they are."""

    model_config = ConfigDict(frozen=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
