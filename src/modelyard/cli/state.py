"""What every command shares: the settings (flags over env over file) and a lazily made client."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from modelyard.errors import ModelyardError
from modelyard.settings import LoadedSettings, load_settings

if TYPE_CHECKING:
    from modelyard.client import Client

_KEY_ID = re.compile(r"\b[0-9a-f]{12}\b")  # what KeyStore.create makes: secrets.token_hex(6)


@dataclass
class State:
    flags: dict[str, Any] = field(default_factory=dict)
    config_file: Path | None = None
    _loaded: LoadedSettings | None = None
    _client: Client | None = None
    _key_names: dict[str, str] | None = None

    def loaded(self, **more: Any) -> LoadedSettings:
        if more or self._loaded is None:
            self._loaded = load_settings({**self.flags, **more}, self.config_file)
        return self._loaded

    def client(self) -> Client:
        if self._client is None:
            from modelyard.client import Client  # httpx and the records: not for --help

            self._client = Client(settings=self.loaded().settings)
        return self._client

    def close(self) -> None:
        """Close the client, if one was made."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def key_names(self) -> dict[str, str]:
        """Key id -> name, of the keys this key may list (all, for an admin)."""
        if self._key_names is None:
            try:
                self._key_names = {k.id: k.name for k in self.client().list_keys()}
            except ModelyardError:  # a key that may list no keys still reads the rest
                self._key_names = {}
        return self._key_names

    def who(self, key_id: str | None) -> str:
        """A key's name for "by" columns; its id when this key may not list it."""
        if not key_id:
            return "-"
        return self.key_names().get(key_id, key_id)

    def named(self, text: str) -> str:
        """Server-written text ("promoted by <key id>") with key names for the ids in it."""
        return _KEY_ID.sub(lambda m: self.key_names().get(m[0], m[0]), text)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} {item!r}: write KEY=VALUE")
        pairs[key] = value
    return pairs
