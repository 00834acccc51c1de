"""The catalogue of every event type modelyard appends, with its subject and payload.

Emitters name a member of `EventType`, never a string: an event whose name depends on a state goes
through an explicit mapping (`modelyard.serving.states.REVISION_EVENTS`, ...), so the catalogue is
the whole list of what webhooks and the event stream can carry. ``docs/events.md`` is rendered
from `CATALOGUE` (``python -m tests.events.test_catalogue`` rewrites it; a test keeps the two in
step). Every event also has ``id``, ``type``, ``namespace`` (none for keys), ``subject``,
``actor`` (the key that acted, none for the platform's own controllers) and ``created_at``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from modelyard.types import ArtifactKind


class EventType(enum.StrEnum):
    NAMESPACE_CREATED = "namespace.created"
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_DELETED = "webhook.deleted"
    MODEL_VERSION_COMMITTED = "model.version.committed"
    MODEL_ALIAS_MOVED = "model.alias.moved"
    MODEL_ALIAS_DELETED = "model.alias.deleted"
    DATASET_VERSION_COMMITTED = "dataset.version.committed"
    DATASET_ALIAS_MOVED = "dataset.alias.moved"
    DATASET_ALIAS_DELETED = "dataset.alias.deleted"
    PIPELINE_REGISTERED = "pipeline.registered"
    RUN_QUEUED = "run.queued"
    RUN_STARTED = "run.started"
    RUN_RETRIED = "run.retried"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    STEP_FAILED = "step.failed"
    SCHEDULE_CREATED = "schedule.created"
    SCHEDULE_PAUSED = "schedule.paused"
    SCHEDULE_RESUMED = "schedule.resumed"
    SCHEDULE_DELETED = "schedule.deleted"
    SCHEDULE_SKIPPED = "schedule.skipped"
    DEPLOYMENT_CREATED = "deployment.created"
    DEPLOYMENT_UPDATED = "deployment.updated"
    DEPLOYMENT_STRATEGY_CHANGED = "deployment.strategy.changed"
    DEPLOYMENT_TRAFFIC_CHANGED = "deployment.traffic.changed"
    DEPLOYMENT_SLOS_CHANGED = "deployment.slos.changed"
    DEPLOYMENT_DELETED = "deployment.deleted"
    REVISION_CREATED = "revision.created"
    REVISION_READY = "revision.ready"
    REVISION_FAILED = "revision.failed"
    REVISION_RETIRED = "revision.retired"
    REVISION_REJECTED = "revision.rejected"
    ROLLOUT_STARTED = "rollout.started"
    ROLLOUT_PAUSED = "rollout.paused"
    ROLLOUT_RESUMED = "rollout.resumed"
    ROLLOUT_PROMOTED = "rollout.promoted"
    ROLLOUT_ROLLED_BACK = "rollout.rolled_back"
    ROLLOUT_SUPERSEDED = "rollout.superseded"
    SLO_ALERT_FIRING = "slo.alert.firing"
    SLO_ALERT_RESOLVED = "slo.alert.resolved"
    REALTIME_PREDICTION = "realtime.prediction"
    STREAM_CREATED = "stream.created"
    STREAM_DELETED = "stream.deleted"
    STREAM_ENTITY_DELETED = "stream.entity.deleted"


VERSION_COMMITTED: dict[ArtifactKind, EventType] = {
    "model": EventType.MODEL_VERSION_COMMITTED,
    "dataset": EventType.DATASET_VERSION_COMMITTED,
}
ALIAS_MOVED: dict[ArtifactKind, EventType] = {
    "model": EventType.MODEL_ALIAS_MOVED,
    "dataset": EventType.DATASET_ALIAS_MOVED,
}
ALIAS_DELETED: dict[ArtifactKind, EventType] = {
    "model": EventType.MODEL_ALIAS_DELETED,
    "dataset": EventType.DATASET_ALIAS_DELETED,
}


@dataclass(frozen=True)
class EventDoc:
    """What one event type means: when it is appended, its subject, and its ``data`` fields
    (name -> type and meaning; a field marked "optional" may be absent)."""

    summary: str
    subject: str
    data: dict[str, str]


_VERSION = {
    "kind": "`model` or `dataset`",
    "namespace": "str",
    "name": "str",
    "version": "int: the number the commit assigned",
    "version_id": "str: the version's id (also its draft id)",
    "manifest_digest": "str: sha256 of the version's file list",
    "runtime": "str | null: the model server runtime (models)",
    "size_bytes": "int: total size of the files",
}
_ALIAS = {
    "kind": "`model` or `dataset`",
    "namespace": "str",
    "name": "str",
    "alias": "str",
    "version": "int | null: the version it names now (null: deleted)",
    "previous": "int | null: the version it named before",
}
_RUN = {"run": "str: the run's id", "pipeline": "str: the pipeline's name"}
_RUN_END = {**_RUN, "reason": "str | null: why it ended so"}
_STREAM_SPEC = {"spec": "object: the stored spec"}
_REVISION = {
    "revision": "int: the revision's number",
    "model_version": "int: the model version it serves",
    "reason": "str | null: why (a failure's message, the analysis that rejected it)",
}
_ROLLOUT_MANUAL = {
    "rollout": "str: the rollout's id",
    "canary": "int: the canary revision",
    "step": "int: the step it is at (optional: by hand only)",
    "analysis": "object: the analysis that paused it (optional: automatic pauses only)",
}
_ROLLOUT_END = {
    "rollout": "str: the rollout's id",
    "stable": "int: the stable revision",
    "canary": "int: the canary revision",
    "reason": "str: why it ended so",
    "analysis": "object | null: the last step's analysis, the evidence",
}
_ALERT = {
    "alert": "str: the alert's id",
    "objective": "str: the objective's name",
    "rule": "str: the burn-rate rule (`page-1h`, `page-6h`, `ticket-3d`)",
    "severity": "`page` or `ticket`",
    "burn_rates": "object: burn rate per window of the rule",
    "budget_remaining": "float: share of the error budget left (optional when resolved)",
}

CATALOGUE: dict[EventType, EventDoc] = {
    EventType.NAMESPACE_CREATED: EventDoc("A namespace was created.", "{namespace}", {}),
    EventType.KEY_CREATED: EventDoc(
        "An API key was created (its secret is never in an event).",
        "keys/{key_id}",
        {
            "name": "str",
            "admin": "bool: whether it is a platform admin key",
            "roles": "object: namespace -> role",
            "expires_at": "str | null: ISO 8601",
        },
    ),
    EventType.KEY_REVOKED: EventDoc("An API key was revoked.", "keys/{key_id}", {}),
    EventType.WEBHOOK_CREATED: EventDoc(
        "A webhook was registered in a namespace.",
        "{namespace}/webhooks/{id}",
        {"url": "str", "events": "list[str]: the event type patterns it receives"},
    ),
    EventType.WEBHOOK_DELETED: EventDoc("A webhook was deleted.", "{namespace}/webhooks/{id}", {}),
    EventType.MODEL_VERSION_COMMITTED: EventDoc(
        "A model version was committed (its files verified); deployments following the model "
        "get a new revision, pipelines triggered by it start.",
        "{namespace}/{name}@{version}",
        _VERSION,
    ),
    EventType.MODEL_ALIAS_MOVED: EventDoc(
        "A model's alias was set or moved to a version.", "{namespace}/{name}@{alias}", _ALIAS
    ),
    EventType.MODEL_ALIAS_DELETED: EventDoc(
        "A model's alias was deleted.", "{namespace}/{name}@{alias}", _ALIAS
    ),
    EventType.DATASET_VERSION_COMMITTED: EventDoc(
        "A dataset version was committed; pipelines triggered by it start.",
        "{namespace}/{name}@{version}",
        _VERSION,
    ),
    EventType.DATASET_ALIAS_MOVED: EventDoc(
        "A dataset's alias was set or moved to a version.", "{namespace}/{name}@{alias}", _ALIAS
    ),
    EventType.DATASET_ALIAS_DELETED: EventDoc(
        "A dataset's alias was deleted.", "{namespace}/{name}@{alias}", _ALIAS
    ),
    EventType.PIPELINE_REGISTERED: EventDoc(
        "A pipeline spec was registered (a new one, or a new digest of one).",
        "{namespace}/{name}",
        {"name": "str", "digest": "str: sha256 of the spec"},
    ),
    EventType.RUN_QUEUED: EventDoc(
        "A run was created (by hand, a schedule or a trigger) and waits for the executor.",
        "{namespace}/runs/{run}",
        {**_RUN, "params": "object: the resolved parameters"},
    ),
    EventType.RUN_STARTED: EventDoc(
        "The executor started a queued run.", "{namespace}/runs/{run}", _RUN
    ),
    EventType.RUN_RETRIED: EventDoc(
        "A failed or cancelled run runs again (its succeeded steps are kept).",
        "{namespace}/runs/{run}",
        _RUN,
    ),
    EventType.RUN_SUCCEEDED: EventDoc(
        "Every step of a run succeeded (or was cached or skipped).",
        "{namespace}/runs/{run}",
        _RUN_END,
    ),
    EventType.RUN_FAILED: EventDoc(
        "A run ended with a failed step.", "{namespace}/runs/{run}", _RUN_END
    ),
    EventType.RUN_CANCELLED: EventDoc(
        "A running run was cancelled.", "{namespace}/runs/{run}", _RUN_END
    ),
    EventType.STEP_FAILED: EventDoc(
        "A step attempt failed for good (no retry left).",
        "{namespace}/runs/{run}",
        {**_RUN, "step": "str: the node (`task` or `task[i]`)", "reason": "str"},
    ),
    EventType.SCHEDULE_CREATED: EventDoc(
        "A schedule or trigger was created.",
        "{namespace}/schedules/{name}",
        {"pipeline": "str", "kind": "`cron`, `interval` or `event` (a trigger)"},
    ),
    EventType.SCHEDULE_PAUSED: EventDoc(
        "A schedule was paused.", "{namespace}/schedules/{name}", {}
    ),
    EventType.SCHEDULE_RESUMED: EventDoc(
        "A schedule was resumed.", "{namespace}/schedules/{name}", {}
    ),
    EventType.SCHEDULE_DELETED: EventDoc(
        "A schedule was deleted.", "{namespace}/schedules/{name}", {}
    ),
    EventType.SCHEDULE_SKIPPED: EventDoc(
        "A schedule's slot or a trigger's event started no run: too many still running.",
        "{namespace}/schedules/{name}",
        {
            "fire_time": "str: ISO 8601 (optional: schedules)",
            "event": "int: the triggering event's id (optional: triggers)",
            "reason": "str",
        },
    ),
    EventType.DEPLOYMENT_CREATED: EventDoc(
        "A deployment was created.",
        "{namespace}/{name}",
        {
            "model": "str | null: `name@alias|latest|N` (null: a realtime one without a model)",
            "spec": "object: the deployment spec (with `realtime`: a realtime deployment)",
            "rollout": "object: the rollout strategy",
        },
    ),
    EventType.DEPLOYMENT_UPDATED: EventDoc(
        "A deployment's spec or model changed.",
        "{namespace}/{name}",
        {
            "changes": "list[str]: the fields changed",
            "revision": "int | null: the revision it made, if any",
        },
    ),
    EventType.DEPLOYMENT_STRATEGY_CHANGED: EventDoc(
        "A deployment's rollout strategy changed.",
        "{namespace}/{name}",
        {"rollout": "object: the rollout strategy"},
    ),
    EventType.DEPLOYMENT_TRAFFIC_CHANGED: EventDoc(
        "A deployment's traffic changed (by hand or by a rollout).",
        "{namespace}/{name}",
        {
            "traffic": "object: targets, tags, shadow, sticky header",
            "rollout": "str: the rollout that moved it (optional)",
            "step": "int: the rollout's step (optional)",
        },
    ),
    EventType.DEPLOYMENT_SLOS_CHANGED: EventDoc(
        "A deployment's service level objectives were set.",
        "{namespace}/{name}",
        {"slos": "list[object]: the objectives"},
    ),
    EventType.DEPLOYMENT_DELETED: EventDoc(
        "A deployment was deleted with its revisions.", "{namespace}/{name}", {}
    ),
    EventType.REVISION_CREATED: EventDoc(
        "A deployment got a new revision (state `deploying`).",
        "{namespace}/{deployment}",
        {"revision": "int", "model": "str | null: `namespace/name@version` (null: no model)"},
    ),
    EventType.REVISION_READY: EventDoc(
        "A revision's replicas got ready.", "{namespace}/{deployment}", _REVISION
    ),
    EventType.REVISION_FAILED: EventDoc(
        "A revision cannot start (crash loop, load error).", "{namespace}/{deployment}", _REVISION
    ),
    EventType.REVISION_RETIRED: EventDoc(
        "A revision no traffic reaches any more was stopped.",
        "{namespace}/{deployment}",
        _REVISION,
    ),
    EventType.REVISION_REJECTED: EventDoc(
        "A canary revision failed its analysis or was rolled back by hand.",
        "{namespace}/{deployment}",
        _REVISION,
    ),
    EventType.ROLLOUT_STARTED: EventDoc(
        "A canary rollout started.",
        "{namespace}/{deployment}",
        {
            "rollout": "str: the rollout's id",
            "stable": "int: the stable revision",
            "canary": "int: the canary revision",
            "steps": "list[int]: the canary's percent at each step",
        },
    ),
    EventType.ROLLOUT_PAUSED: EventDoc(
        "A rollout paused: by hand, or its analysis stayed inconclusive too long.",
        "{namespace}/{deployment}",
        _ROLLOUT_MANUAL,
    ),
    EventType.ROLLOUT_RESUMED: EventDoc(
        "A paused rollout was resumed by hand.",
        "{namespace}/{deployment}",
        {
            "rollout": "str: the rollout's id",
            "canary": "int: the canary revision",
            "step": "int: the step it resumes at",
        },
    ),
    EventType.ROLLOUT_PROMOTED: EventDoc(
        "A rollout ended with the canary taking all the traffic.",
        "{namespace}/{deployment}",
        _ROLLOUT_END,
    ),
    EventType.ROLLOUT_ROLLED_BACK: EventDoc(
        "A rollout ended with all traffic back on the stable revision; the canary is rejected.",
        "{namespace}/{deployment}",
        {**_ROLLOUT_END, "model_version": "int: the canary's model version"},
    ),
    EventType.ROLLOUT_SUPERSEDED: EventDoc(
        "A newer revision got ready during a rollout and starts its own.",
        "{namespace}/{deployment}",
        {
            "rollout": "str: the superseded rollout's id",
            "canary": "int: its canary revision",
            "by": "int: the revision that replaces it",
        },
    ),
    EventType.SLO_ALERT_FIRING: EventDoc(
        "A burn-rate rule of a deployment's objective started holding.",
        "{namespace}/{deployment}",
        {
            **_ALERT,
            "kind": "`availability`, `latency` or `lag`",
            "target": "float: the objective's target",
            "threshold_ms": "float | null: the latency objective's threshold",
            "threshold_s": "float: the lag objective's threshold (lag objectives only)",
            "factor": "float: the rule's burn-rate factor",
        },
    ),
    EventType.SLO_ALERT_RESOLVED: EventDoc(
        "A firing alert's rule stopped holding, or its objective was removed.",
        "{namespace}/{deployment}",
        {**_ALERT, "fired_at": "str: ISO 8601", "reason": "str"},
    ),
    EventType.REALTIME_PREDICTION: EventDoc(
        "A realtime deployment with `emit_events` stored a new prediction (at least once: a "
        "retried trigger may append it again).",
        "{namespace}/{deployment}",
        {
            "deployment": "str: `namespace/name`",
            "entity": "str: the entity key",
            "value": "any: the prediction (optional: absent when over 4 KiB)",
            "value_truncated": "bool: true when the value was left out (optional)",
            "model": "str | null: the model version, `namespace/name@number`",
            "event_id": "str: the trigger event's id",
            "event_time": "float: the trigger event's time (Unix seconds)",
            "written_at": "float: when the prediction was stored (Unix seconds)",
            "revision": "int: the revision whose worker made it",
        },
    ),
    EventType.STREAM_CREATED: EventDoc(
        "A realtime stream was created.", "{namespace}/{name}", _STREAM_SPEC
    ),
    EventType.STREAM_DELETED: EventDoc("A realtime stream was deleted.", "{namespace}/{name}", {}),
    EventType.STREAM_ENTITY_DELETED: EventDoc(
        "An entity's raw events were deleted from a stream (erasure).",
        "{namespace}/{stream}",
        {"entity": "str: the entity key", "deleted": "int: events deleted"},
    ),
}
