"""Garbage collection: expired drafts, their staged uploads, and blobs no version references."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import sqlalchemy as sa

from modelyard.events.log import EventLog
from modelyard.store.blobs import BlobStore
from modelyard.store.schema import VersionFileRow, VersionRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collected:
    drafts: int
    staging: int
    blobs: int


def collect_garbage(events: EventLog, blobs: BlobStore, ttl: dt.timedelta) -> Collected:
    """Delete drafts untouched for ``ttl``, staging folders with no draft, and unreferenced blobs
    older than ``ttl`` (younger ones may belong to a commit in flight)."""
    cutoff = events.clock() - ttl
    with events.db.write() as session:
        expired = list(
            session.scalars(
                sa.select(VersionRow.id).where(
                    VersionRow.state == "draft", VersionRow.updated_at < cutoff
                )
            )
        )
        if expired:
            session.execute(sa.delete(VersionRow).where(VersionRow.id.in_(expired)))
    with events.db.read() as session:
        drafts = set(session.scalars(sa.select(VersionRow.id).where(VersionRow.state == "draft")))
        referenced = set(session.scalars(sa.select(VersionFileRow.sha256).distinct()))
    staging = 0
    for draft_id in blobs.staged_drafts():
        if draft_id not in drafts:
            blobs.drop_staging(draft_id)
            staging += 1
    removed = 0
    for digest, modified in blobs.iter_blobs():
        if digest not in referenced and modified is not None and modified < cutoff:
            blobs.delete(digest)
            removed += 1
    if expired or staging or removed:
        log.info("gc: %d drafts, %d staging folders, %d blobs", len(expired), staging, removed)
    return Collected(len(expired), staging, removed)
