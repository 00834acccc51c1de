"""Predictions in Redis: reads in well under a millisecond, expiry by Redis itself.

Per deployment (all its keys share one hash tag, so a Redis Cluster keeps them in one slot):
``p:{event id}:{model}`` holds a prediction as JSON with its TTL (``SET NX PXAT``: the
at-most-one rule), ``h:{entity}`` a sorted set of the entity's prediction keys by ``seq``,
``l:{entity}`` the latest's key, ``seq`` and body. One Lua script writes all three atomically and
moves the latest only to a ``seq`` at least as high. A read of the latest is one ``HMGET`` per
entity, all in one round trip: the gateway answers it on its event loop. How durable a write is
depends on the server's persistence: ``appendonly yes`` with ``appendfsync always`` loses nothing
acknowledged on a crash.

URL: ``redis://HOST:PORT/DB``; ``?prefix=P`` puts every key under ``P`` (tests, shared servers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import orjson

from modelyard.errors import ConfigError
from modelyard.realtime.backends.sqlite import _jsonable
from modelyard.realtime.predictions import Prediction

_PUT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PXAT', ARGV[2]) == false then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('SADD', KEYS[4], KEYS[1])
local current = redis.call('HGET', KEYS[3], 'seq')
if (not current) or tonumber(current) <= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[3], 'seq', ARGV[3], 'key', KEYS[1], 'body', ARGV[1])
end
return 1
"""


class RedisPredictionStore:
    def __init__(self, url: str) -> None:
        try:
            import redis
        except ImportError as exc:
            raise ConfigError(
                "the Redis prediction store needs redis-py: pip install 'modelyard[realtime]'"
            ) from exc
        parts = urlsplit(url)
        self.prefix = parse_qs(parts.query).get("prefix", ["modelyard"])[0]
        self.redis = redis.Redis.from_url(urlunsplit(parts._replace(query="")))
        self._put = self.redis.register_script(_PUT)
        self._no_script = redis.exceptions.NoScriptError

    def _key(self, deployment: str, *parts: str) -> str:
        return f"{self.prefix}:{{{deployment}}}:" + ":".join(parts)

    def put(self, prediction: Prediction) -> bool:
        return self.put_many([prediction])[0]

    def put_many(self, predictions: Sequence[Prediction]) -> list[bool]:
        if not predictions:
            return []
        calls = []
        for p in predictions:
            key = self._key(p.deployment, "p", p.event_id, p.model or "")
            keys = [
                key,
                self._key(p.deployment, "h", p.entity),
                self._key(p.deployment, "l", p.entity),
                self._key(p.deployment, "all"),
            ]
            body = orjson.dumps(p.model_dump(mode="json"), default=_jsonable)
            calls.append((*keys, body, int(p.expires_at * 1000), p.seq))
        try:
            return self._put_all(calls)
        except self._no_script:  # a server that restarted or flushed its scripts: load it again
            self.redis.script_load(_PUT)
            return self._put_all(calls)

    def _put_all(self, calls: list[tuple[Any, ...]]) -> list[bool]:
        # EVALSHA in one pipeline: one round trip (redis-py's script objects add a SCRIPT EXISTS
        # to each); each script is atomic and a retried one writes nothing new
        pipe = self.redis.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(self._put.sha, 4, *call)
        return [bool(done) for done in pipe.execute()]

    def latest(self, deployment: str, entities: Sequence[str], now: float) -> dict[str, Prediction]:
        if not entities:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for entity in entities:
            pipe.hmget(self._key(deployment, "l", entity), "body", "key")
        bodies, keys = [], []
        for body, key in pipe.execute():
            if body is not None:
                bodies.append(body)
            elif key is not None:  # written before the latest kept its body
                keys.append(key)
        found = self._parse(bodies, now) + self._load(keys, now)
        return {p.entity: p for p in found}

    def history(self, deployment: str, entity: str, limit: int, now: float) -> list[Prediction]:
        keys = self.redis.zrevrange(self._key(deployment, "h", entity), 0, limit - 1)
        return self._load(list(keys), now)

    def count(self, deployment: str) -> int:
        return int(self.redis.scard(self._key(deployment, "all")))

    def purge(self, now: float) -> int:
        """Redis expires the predictions; this drops the index entries of expired ones."""
        removed = 0
        for index in self.redis.scan_iter(match=f"{self.prefix}:*:all"):
            members = list(self.redis.smembers(index))
            pipe = self.redis.pipeline(transaction=False)
            for member in members:
                pipe.exists(member)
            gone = [m for m, alive in zip(members, pipe.execute(), strict=True) if not alive]
            if gone:
                removed += int(self.redis.srem(index, *gone))
        return removed

    def drop(self, deployment: str) -> None:
        keys = list(self.redis.scan_iter(match=self._key(deployment, "*")))
        if keys:
            self.redis.delete(*keys)

    def close(self) -> None:
        self.redis.close()

    def _load(self, keys: list[Any], now: float) -> list[Prediction]:
        return self._parse(self.redis.mget(keys), now) if keys else []

    @staticmethod
    def _parse(bodies: list[Any], now: float) -> list[Prediction]:
        found = []
        for body in bodies:
            if body is not None:
                prediction = Prediction.model_validate(orjson.loads(body))
                if prediction.expires_at > now:
                    found.append(prediction)
        return found
