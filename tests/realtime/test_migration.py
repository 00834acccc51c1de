"""Migration 0009: the realtime deployments of before become deployments with a realtime section
and a first revision pinning what their model reference resolves to; the old table goes."""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa

from modelyard.serving.records import DeploymentSpec
from modelyard.store.db import MIGRATIONS, Database

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RULE = {"types": ["cart"], "conditions": [], "predicate": None, "debounce": None}


def _realtime(id: str, name: str, model: str | None) -> dict[str, object]:
    spec = {
        "stream": "clicks",
        "function": "shop:score",
        "model": model,
        "rule": RULE,
        "concurrency": 2,
        "max_attempts": 3,
        "timeout_s": 10.0,
        "ttl": "7d",
        "history_limit": 100,
        "env": {"A": "1"},
    }
    return {
        "id": id,
        "namespace_id": 1,
        "name": name,
        "spec": json.dumps(spec),
        "created_by": None,
        "created_at": NOW,
        "updated_at": NOW,
    }


def test_realtime_deployments_become_deployments(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    db = Database(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with db.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0008")
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO namespaces (id, name, description, created_at) "
                    "VALUES (1, 'team', '', :t)"
                ),
                {"t": NOW},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO artifacts (id, namespace_id, kind, name, description, created_at) "
                    "VALUES (1, 1, 'model', 'iris', '', :t)"
                ),
                {"t": NOW},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO versions (id, artifact_id, number, state, description, runtime, "
                    "signature, metrics, params, tags, lineage, size_bytes, created_at, "
                    "updated_at, committed_at) VALUES (:id, 1, :n, 'committed', '', 'sklearn', "
                    "'{}', '{}', '{}', '{}', '{}', 0, :t, :t, :t)"
                ),
                [{"id": "v1", "n": 1, "t": NOW}, {"id": "v2", "n": 2, "t": NOW}],
            )
            conn.execute(
                sa.text(
                    "INSERT INTO realtime_deployments (id, namespace_id, name, spec, created_by, "
                    "created_at, updated_at) VALUES (:id, :namespace_id, :name, :spec, "
                    ":created_by, :created_at, :updated_at)"
                ),
                [
                    _realtime("d1", "scorer", "iris@latest"),
                    _realtime("d2", "counter", None),
                    _realtime("d3", "waiting", "nothing@latest"),
                ],
            )
        db.migrate()
        assert "realtime_deployments" not in sa.inspect(db.engine).get_table_names()
        with db.engine.connect() as conn:
            deployments = {
                row.name: row
                for row in conn.execute(sa.text("SELECT id, name, model, spec FROM deployments"))
            }
            revisions = {
                row.deployment_id: row
                for row in conn.execute(
                    sa.text(
                        "SELECT deployment_id, number, version_id, version_number, state, "
                        "workload, spec FROM revisions"
                    )
                )
            }
        assert sorted(deployments) == ["counter", "scorer", "waiting"]
        assert (deployments["scorer"].model, deployments["counter"].model) == ("iris@latest", "")
        spec = DeploymentSpec.model_validate(_json(deployments["scorer"].spec))
        assert spec.realtime is not None and spec.realtime.stream == "clicks"
        assert (spec.model, spec.env, spec.realtime.concurrency) == ("iris@latest", {"A": "1"}, 2)
        scorer, counter = revisions["d1"], revisions["d2"]
        assert (scorer.number, scorer.version_id, scorer.version_number) == (1, "v2", 2)
        assert (counter.version_id, counter.version_number) == (None, 0)
        assert {scorer.workload, counter.workload} == {"realtime-worker"}
        assert {scorer.state, counter.state} == {"deploying"}
        # nothing to pin yet: the next commit of the model makes its first revision
        assert "d3" not in revisions
    finally:
        db.dispose()


def _json(value: object) -> object:
    """A JSON column as read: text on SQLite, decoded already on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value
