"""The control plane: builds every service from the settings and runs the API and controllers.

It is the single writer of metadata. Controllers (webhook delivery, garbage collection) run as
loops (`modelyard.loops`) beside the API: they start in a defined order and stop in the reverse
one, and the health endpoint reports each loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.auth.keys import KeyStore
from modelyard.delivery.push import PushDeploys
from modelyard.delivery.rollout import RolloutController, Rollouts
from modelyard.delivery.slo import SloController, Slos
from modelyard.errors import ConfigError, ModelyardError
from modelyard.events.log import Clock, EventLog, utcnow
from modelyard.events.webhooks import Backoff, Webhooks
from modelyard.lease import Lease, LeaseTable
from modelyard.loops import Loop
from modelyard.pipelines.backends import load_step_backend
from modelyard.pipelines.executor import Executor
from modelyard.pipelines.runs import Pipelines
from modelyard.pipelines.schedules import Schedules
from modelyard.realtime.backends import RealtimeStores
from modelyard.realtime.catalog import Catalog
from modelyard.registry.aliases import Aliases
from modelyard.registry.gc import collect_garbage
from modelyard.registry.namespaces import Namespaces
from modelyard.registry.versions import Versions
from modelyard.serving.controller import ServingController
from modelyard.serving.deployments import Deployments, Revision
from modelyard.serving.orchestrator import Orchestrator, load_orchestrator
from modelyard.serving.states import Workload
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore, open_blob_store
from modelyard.store.db import Database
from modelyard.telemetry.query import Telemetry
from modelyard.types import Role

log = logging.getLogger(__name__)
GC_INTERVAL_SECONDS = 600.0


@dataclass
class ControlPlane:
    """Every service of the control plane, wired together; tests build one on a tmp folder."""

    settings: Settings
    db: Database
    blobs: BlobStore
    events: EventLog
    namespaces: Namespaces
    versions: Versions
    aliases: Aliases
    keys: KeyStore
    webhooks: Webhooks
    pipelines: Pipelines
    executor: Executor
    schedules: Schedules
    deployments: Deployments
    serving: ServingController
    delivery: PushDeploys
    rollouts: Rollouts
    rollout_controller: RolloutController
    orchestrator: Orchestrator
    slos: Slos
    slo_controller: SloController
    telemetry: Telemetry
    """What the gateway measured: its recent reports and the stored per-minute counts."""
    catalog: Catalog
    """Streams and realtime deployments."""
    realtime_stores: RealtimeStores
    api_url: str | None = None
    """Where replicas reach the API to pull their model; set by whoever serves the API."""
    _keys_lock: threading.Lock = field(default_factory=threading.Lock)
    _gc: Loop = field(init=False)
    lease: Lease = field(init=False)
    """Only its holder runs the controllers: see :meth:`lead`."""
    on_lease_lost: Callable[[str], None] | None = None
    """Runs (with the reason) once the controllers stopped because the lease was lost."""
    _controllers_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._gc = Loop("gc", self._collect, interval=GC_INTERVAL_SECONDS, join_timeout=5.0)
        self.lease = Lease(
            LeaseTable(self.db),
            duration=self.settings.lease_seconds,
            retry=self.settings.lease_retry_seconds,
            on_acquired=self.start_controllers,
            on_lost=self._lease_lost,
            url=lambda: self.api_url,
            home=self.settings.home,
        )

    @classmethod
    def build(
        cls, settings: Settings, *, clock: Clock = utcnow, backoff: Backoff | None = None
    ) -> ControlPlane:
        settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database_url)
        if settings.migrate_on_start:
            db.migrate()
        else:
            _require_migrated(db)
        blobs = open_blob_store(settings.blob_url, settings.blob_options)
        events = EventLog(db, clock)
        versions, aliases = Versions(events, blobs), Aliases(events)
        pipelines = Pipelines(events)
        executor = Executor(
            events,
            blobs,
            versions,
            aliases,
            settings.home,
            settings.pipeline_parallelism,
            settings.step_grace_seconds,
            backend=load_step_backend(settings.step_backend, settings),
            blob_options=settings.blob_options,
        )
        schedules = Schedules(events, pipelines)
        schedules.on_run_created.append(executor.wake)
        keys = KeyStore(events)
        deployments = Deployments(events)
        telemetry = Telemetry(db, events.clock)
        slos = Slos(events, deployments, telemetry)
        orchestrator = load_orchestrator(settings.orchestrator, settings)
        rollouts = Rollouts(deployments, telemetry)
        serving = ServingController(deployments, keys, orchestrator, events, telemetry)
        catalog = Catalog(events, deployments)
        stores = RealtimeStores(
            settings.realtime_events_url,
            settings.realtime_queue_url,
            settings.realtime_predictions_url,
        )
        serving.realtime_table = lambda: {
            **catalog.data_plane_table(),
            "stores": stores.urls,
            "max_lag": settings.realtime_max_lag,
            "max_lag_seconds": settings.realtime_max_lag_seconds,
        }
        return cls(
            settings=settings,
            db=db,
            blobs=blobs,
            events=events,
            namespaces=Namespaces(events),
            versions=versions,
            aliases=aliases,
            keys=keys,
            webhooks=Webhooks(events, backoff),
            pipelines=pipelines,
            executor=executor,
            schedules=schedules,
            deployments=deployments,
            serving=serving,
            delivery=PushDeploys(events, deployments),
            rollouts=rollouts,
            rollout_controller=RolloutController(rollouts),
            orchestrator=orchestrator,
            slos=slos,
            slo_controller=SloController(slos),
            telemetry=telemetry,
            catalog=catalog,
            realtime_stores=stores,
        )

    def ensure_admin_key(self) -> str | None:
        """On first start create an admin key and write it to ``admin.key`` (mode 0600).

        Returns the path's content when it was created now, None when keys existed already.
        """
        if self.keys.count():
            return None
        _, token = self.keys.create("admin", admin=True)
        _write_secret(self.settings.admin_key_path, token)
        return token

    def gateway_env(self) -> dict[str, str]:
        """The gateway's way to the control plane, with its key (``<home>/keys/gateway.key``):
        it reads every key's hash for its routing table, so it is an admin key, and it never
        leaves modelyard's own processes."""
        return {
            "MODELYARD_URL": self.api_url or self.settings.url,
            "MODELYARD_API_KEY": self._stored_key("gateway", admin=True),
        }

    def replica_env(self, revision: Revision) -> dict[str, str]:
        """What a replica needs to pull its version: the API, a key that may only read its own
        namespace (model code runs in that process), and the shared download cache; a realtime
        worker also the realtime stores."""
        settings = self.settings
        env = {
            "MODELYARD_URL": self.api_url or settings.url,
            "MODELYARD_API_KEY": self._stored_key("replicas", {revision.namespace: Role.VIEWER}),
            "MODELYARD_CACHE_DIR": str(settings.cache_dir or settings.home / "cache"),
        }
        if revision.workload == Workload.REALTIME_WORKER:
            env["MODELYARD_REALTIME_EVENTS_URL"] = settings.realtime_events_url
            env["MODELYARD_REALTIME_QUEUE_URL"] = settings.realtime_queue_url
            env["MODELYARD_REALTIME_PREDICTIONS_URL"] = settings.realtime_predictions_url
        return env

    def step_env(self, namespace: str) -> dict[str, str]:
        """What a step of modelyard's own (``sql_import``) needs: the API, a key that may edit
        only the run's namespace, the download cache, and the named SQL connections (which hold
        no secrets; each password stays in the variable or file its connection names)."""
        from modelyard.sql.connections import connections_env

        return {
            "MODELYARD_URL": self.api_url or self.settings.url,
            "MODELYARD_API_KEY": self._stored_key("steps", {namespace: Role.EDITOR}),
            "MODELYARD_CACHE_DIR": str(self.settings.cache_dir or self.settings.home / "cache"),
            **connections_env(self.settings.connections),
        }

    def _stored_key(
        self, name: str, roles: dict[str, Role] | None = None, *, admin: bool = False
    ) -> str:
        """A key the control plane made for its data plane, kept in ``<home>/keys`` (0600) and
        reused across restarts; made again when missing or no longer valid."""
        folder = self.settings.home / "keys"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / (f"{name}-{'-'.join(sorted(roles))}.key" if roles else f"{name}.key")
        with self._keys_lock:
            if path.exists():
                token = path.read_text().strip()
                try:
                    self.keys.authenticate(token)
                    return token
                except ModelyardError:
                    log.warning("the key in %s is not valid any more: making a new one", path)
            _, token = self.keys.create(name, roles, admin=admin)
            _write_secret(path, token)
            return token

    def _controllers(self) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
        """Every controller as (name, start, stop), in start order: what a controller hands work
        to starts before it (the executor before the schedules that create runs, the serving
        controller before the push deploys and rollouts that change its traffic)."""
        return [
            ("webhooks", self.webhooks.start, self.webhooks.stop),
            ("executor", self.executor.start, self.executor.stop),
            ("schedules", self.schedules.start, self.schedules.stop),
            ("slos", self.slo_controller.start, self.slo_controller.stop),
            ("serving", self.serving.start, self.serving.stop),
            ("delivery", self.delivery.start, self.delivery.stop),
            ("rollouts", self.rollout_controller.start, self.rollout_controller.stop),
            ("gc", self._gc.start, self._gc.stop),
        ]

    def lead(self) -> None:
        """Run the controllers while this control plane holds the lease (at once when nobody
        else holds it, else once the holder is gone); until then it is a standby. When the lease
        is lost the controllers stop, then :attr:`on_lease_lost` runs (``modelyard up`` exits)."""
        self.lease.start()

    def step_down(self) -> None:
        """Stop the controllers, then hand the lease back at once for a standby to take."""
        self.lease.stop(self.stop_controllers)

    def _lease_lost(self, why: str) -> None:
        try:
            self.stop_controllers()
        finally:
            if self.on_lease_lost is not None:
                self.on_lease_lost(why)

    def start_controllers(self) -> None:
        """Start every controller in order; when one fails, those started stop again."""
        with self._controllers_lock:
            self._start_controllers()

    def _start_controllers(self) -> None:
        self.orchestrator.env_for = self.replica_env
        self.executor.env_for = self.step_env
        started: list[Callable[[], object]] = []
        for name, start, stop in self._controllers():
            try:
                start()
            except Exception:
                log.exception("the %s controller did not start: stopping the others", name)
                for undo in reversed(started):
                    undo()
                raise
            started.append(stop)

    def stop_controllers(self) -> None:
        """Stop every controller in the reverse of the start order."""
        with self._controllers_lock:
            self._stop_controllers()

    def _stop_controllers(self) -> None:
        failed: Exception | None = None
        for name, _, stop in reversed(self._controllers()):
            try:
                stop()
            except Exception as exc:  # the others still stop; the first failure is raised
                log.exception("the %s controller did not stop cleanly", name)
                failed = failed or exc
        if failed is not None:
            raise failed

    def loops(self) -> list[Loop]:
        """Every controller loop, for the health endpoint."""
        return [
            *self.webhooks.loops(),
            self.executor.loop,
            *self.schedules.loops(),
            self.slo_controller.loop,
            *self.serving.loops(),
            self.delivery.consumer.loop,
            self.rollout_controller.loop,
            self._gc,
        ]

    def collect_garbage(self) -> dict[str, Any]:
        ttl = dt.timedelta(hours=self.settings.draft_ttl_hours)
        return vars(collect_garbage(self.events, self.blobs, ttl))

    def _collect(self) -> None:
        self.collect_garbage()

    def close(self) -> None:
        self.step_down()
        self.stop_controllers()  # also those started without the lease (tests, benchmarks)
        self.webhooks.client.close()
        self.realtime_stores.close()
        self.db.dispose()


def _require_migrated(db: Database) -> None:
    """With ``migrate_on_start`` off a job migrates (the Helm chart's hook): refuse to start on a
    schema it has not brought to the newest revision, rather than fail later on a missing table."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from modelyard.store.db import MIGRATIONS

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with db.engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        db.dispose()  # the control plane does not start: nothing may keep a connection open
        raise ConfigError(
            f"the database is at schema revision {current or 'none'}, not {head}, and "
            "migrate_on_start is off: run `modelyard migrate` (the Helm chart's hook job does) "
            "or set MODELYARD_MIGRATE_ON_START=true"
        )


def _write_secret(path: Path, token: str) -> None:
    """A key file only its owner can read (mode 0600 even when the file existed before)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
