"""Health, identity, namespaces and keys."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from modelyard.client.base import ClientBase
from modelyard.registry.records import NamespaceInfo
from modelyard.types import Role, check_name

if TYPE_CHECKING:
    from modelyard.auth.records import KeyInfo


class Namespaces(ClientBase):
    """Health, identity, namespaces and keys."""

    def health(self) -> dict[str, Any]:
        """The control plane's answer to a health check: ``{"status": "ok", "version": ...}``.

        Example: ``client.health()["status"]``
        """
        result: dict[str, Any] = self.request("GET", "/health")
        return result

    def whoami(self) -> dict[str, Any]:
        """The calling key: its id, name, admin flag and roles per namespace.

        Example: ``client.whoami()["roles"]``
        """
        result: dict[str, Any] = self.request("GET", "/whoami")
        return result

    def create_namespace(self, name: str, description: str = "") -> NamespaceInfo:
        """A new namespace (admin keys only).

        Example: ``client.create_namespace("team", "the ranking team")``
        """
        return NamespaceInfo.model_validate(
            self.request("POST", "/namespaces", json={"name": name, "description": description})
        )

    def list_namespaces(self) -> list[NamespaceInfo]:
        """The namespaces this key may read.

        Example: ``[ns.name for ns in client.list_namespaces()]``
        """
        return [NamespaceInfo.model_validate(n) for n in self.request("GET", "/namespaces")]

    def create_key(
        self,
        name: str,
        roles: dict[str, Role | str] | None = None,
        *,
        admin: bool = False,
        expires_at: dt.datetime | None = None,
    ) -> tuple[KeyInfo, str]:
        """A new key and its token (shown only now); from ``expires_at`` on it is refused.

        Example: ``key, token = client.create_key("ci", {"team": "editor"})``
        """
        from modelyard.auth.records import KeyInfo

        body = self.request(
            "POST",
            "/keys",
            json={
                "name": name,
                "roles": {k: str(v) for k, v in (roles or {}).items()},
                "admin": admin,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
        return KeyInfo.model_validate(body["key"]), str(body["token"])

    def list_keys(self) -> list[KeyInfo]:
        """The keys this key may see (an admin: every key, revoked ones too), never their tokens.

        Example: ``[k.name for k in client.list_keys() if k.revoked_at is None]``
        """
        from modelyard.auth.records import KeyInfo

        return [KeyInfo.model_validate(k) for k in self.request("GET", "/keys")]

    def revoke_key(self, key: str) -> KeyInfo:
        """Revoke a key by its id, or by its name when one live key has that name.

        Example: ``client.revoke_key("ci")``
        """
        from modelyard.auth.records import KeyInfo

        return KeyInfo.model_validate(self.request("DELETE", f"/keys/{check_name(key, 'key')}"))
