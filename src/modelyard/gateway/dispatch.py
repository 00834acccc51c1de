"""Which handler answers a request to the gateway: a table, not a chain of conditions.

A handler is an ASGI callable that answers every request it is given, rejections included, in its
protocol's body format. Three kinds of entries, looked at in this order:

- ``exact``: a whole path (the gateway's own ``/metrics``, ``/healthz``, the OIP server routes);
- ``segment``: the second segment of ``/{namespace}/{segment}/...`` with something after it
  (realtime's ``streams`` and ``predictions``). These names are taken from every namespace's
  deployments: the control plane refuses them as deployment names
  (`modelyard.realtime.streams.RESERVED_PATHS`, which a test holds equal to this table's);
- the ``default``: everything else, which is a deployment's path or no route at all.

A new kind of route is one handler and one `Dispatch.segment` (or `Dispatch.exact`) line where the
gateway builds its table. Looking up costs one dict lookup, and for paths that are not the
gateway's own, two string scans, a slice and a second lookup: it runs on every request.
"""

from __future__ import annotations

from modelyard.serving.asgi import App


class Dispatch:
    def __init__(self, default: App) -> None:
        self.default = default
        self.paths: dict[str, App] = {}
        self.segments: dict[str, App] = {}

    def exact(self, path: str, handler: App) -> None:
        """``handler`` answers ``path`` and nothing under it."""
        self._free(path, self.paths)
        self.paths[path] = handler

    def segment(self, name: str, handler: App) -> None:
        """``handler`` answers ``/{namespace}/{name}/...`` for every namespace."""
        if not name or "/" in name:
            raise ValueError(f"a segment is one path segment, not {name!r}")
        self._free(name, self.segments)
        self.segments[name] = handler

    def handler(self, path: str) -> App:
        """The handler of ``path``."""
        handler = self.paths.get(path)
        if handler is not None:
            return handler
        first = path.find("/", 1)
        if first > 1:
            second = path.find("/", first + 1)
            if second > first + 1:
                handler = self.segments.get(path[first + 1 : second])
                if handler is not None:
                    return handler
        return self.default

    @staticmethod
    def _free(key: str, table: dict[str, App]) -> None:
        if key in table:
            raise ValueError(f"{key!r} already has a handler: one route, one handler")
