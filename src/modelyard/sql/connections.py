"""Named connections to SQL databases: where they are, and where their password comes from.

A connection lives in the settings under ``connections.<name>``, like every other setting (the
config file, or ``MODELYARD_CONNECTIONS`` as JSON)::

    [connections.warehouse]
    url = "postgresql://reader@db.internal:5432/analytics"
    password_env = "WAREHOUSE_PASSWORD"        # or password_file = "/run/secrets/warehouse"
    options = { sslmode = "require", connect_timeout = 10 }

The settings never hold the password itself: a URL with one is refused, and so are options that
look like secrets. The password is read from the environment or the mounted file only when an
import connects (:func:`resolve`), kept out of ``repr``, and every message that leaves an engine
goes through :meth:`Target.redact`, so it cannot reach a version, an event, a run log, an error
message or ``modelyard config``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelyard.errors import ConfigError, InvalidInput
from modelyard.types import check_name

_SECRET_WORDS = ("password", "passwd", "secret", "token", "credential")


def check_no_password(url: str, name: str | None = None) -> None:
    """Refuse a URL that holds a password, naming the connection when the caller knows it."""
    if urlsplit(url).password is not None:
        # ConfigError, not ValueError: pydantic would quote the input (the secret) in its
        # message, and it passes other exceptions through untouched.
        which = f"connection {name!r}" if name is not None else "a connection"
        raise ConfigError(
            f"the URL of {which} holds a password: remove it and set password_env or password_file"
        )


class Connection(BaseModel):
    """One entry of ``connections``: safe to print, store and show (it holds no secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(
        description="postgresql://USER@HOST:PORT/DB, sqlite:///PATH, redshift://..., or any "
        "SQLAlchemy URL; without the password"
    )
    password_env: str | None = Field(
        default=None, description="Environment variable that holds the password."
    )
    password_file: Path | None = Field(
        default=None, description="File that holds the password (a mounted secret)."
    )
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Driver options: libpq parameters for PostgreSQL (sslmode, connect_timeout, "
        "application_name), connect_args for SQLAlchemy URLs",
    )
    engine: str | None = Field(
        default=None, description="Engine to use instead of the automatic choice."
    )

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, url: str) -> str:
        parts = urlsplit(url)
        check_no_password(url)
        if not parts.scheme:
            raise ValueError("give a URL with a scheme, e.g. postgresql://user@host/db")
        return url

    @field_validator("options")
    @classmethod
    def _no_secret_options(
        cls, options: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        for key in options:
            if any(word in key.lower() for word in _SECRET_WORDS):
                raise ConfigError(
                    f"connection option {key!r} looks like a secret: settings hold no secrets, use "
                    "password_env or password_file"
                )
        return options

    @model_validator(mode="after")
    def _one_password_source(self) -> Connection:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give password_env or password_file, not both")
        return self

    @property
    def scheme(self) -> str:
        """The URL's dialect, without a SQLAlchemy driver suffix (``postgresql+psycopg``)."""
        return urlsplit(self.url).scheme.split("+", 1)[0].lower()


@dataclass(frozen=True)
class Target:
    """A connection ready to connect: its settings and its password, which never prints."""

    name: str
    connection: Connection
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The URL as configured (no password): what messages and versions may show."""
        return self.connection.url

    @property
    def scheme(self) -> str:
        return self.connection.scheme

    @property
    def options(self) -> Mapping[str, Any]:
        return self.connection.options

    def url_with_password(self) -> str:
        """The URL with the password in it, for drivers that take only a URL."""
        if self.password is None:
            return self.url
        parts = urlsplit(self.url)
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{quote(user, safe='')}:{quote(self.password, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))

    def redact(self, text: str) -> str:
        """``text`` with the password (plain or URL-quoted) replaced: for every message that
        leaves a driver."""
        if not self.password:
            return text
        for form in {self.password, quote(self.password, safe=""), quote(self.password)}:
            text = text.replace(form, "***")
        return text

    def describe(self) -> str:
        return f"connection {self.name!r} ({self.url})"


def resolve(
    name: str,
    connections: Mapping[str, Connection],
    environ: Mapping[str, str] | None = None,
) -> Target:
    """The connection ``name`` with its password read now from its variable or file."""
    check_name(name, "connection name")
    connection = connections.get(name)
    if connection is None:
        known = ", ".join(sorted(connections)) or "none"
        raise InvalidInput(
            f"no connection named {name!r} in the settings (known: {known}): add "
            f"connections.{name} to the config file or to MODELYARD_CONNECTIONS"
        )
    environ = os.environ if environ is None else environ
    password: str | None = None
    if connection.password_env is not None:
        password = environ.get(connection.password_env)
        if password is None:
            raise ConfigError(
                f"connection {name!r} reads its password from ${connection.password_env}, "
                "which is not set"
            )
    elif connection.password_file is not None:
        path = connection.password_file.expanduser()
        try:
            password = path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"connection {name!r} reads its password from {path}, which cannot be read: "
                f"{exc.strerror or exc}"
            ) from exc
    return Target(name, connection, password)


def connections_env(connections: Mapping[str, Connection]) -> dict[str, str]:
    """``MODELYARD_CONNECTIONS`` for a child process (a pipeline step): the same connections,
    which hold no secrets; the passwords stay where the connections say they are."""
    import json

    body: dict[str, Any] = {
        name: c.model_dump(mode="json", exclude_defaults=True) for name, c in connections.items()
    }
    return {"MODELYARD_CONNECTIONS": json.dumps(body)} if body else {}
