"""Deploys pushed by commits: no polling, no image build.

A durable consumer of the event log hears ``model.version.committed`` and ``model.alias.moved`` the
moment their transaction commits, and gives every deployment that follows ``latest`` or that alias
a new revision. The serving controller, woken by the revision's event, starts it; once ready it
takes the traffic. The consumer's cursor lives in the database, so a commit made while the control
plane was down is deployed when it comes back; handling is idempotent (a deployment whose
revision already runs that version gets no new one).
"""

from __future__ import annotations

import logging

from modelyard.events.consumers import DurableConsumer
from modelyard.events.log import EventLog
from modelyard.events.records import Event
from modelyard.events.types import EventType
from modelyard.serving.deployments import Deployments

log = logging.getLogger(__name__)
CONSUMER = "delivery.push"


class PushDeploys:
    def __init__(self, events: EventLog, deployments: Deployments) -> None:
        self.deployments = deployments
        self.consumer = DurableConsumer(CONSUMER, events, self.handle)

    def handle(self, event: Event) -> None:
        data = event.data
        if data.get("kind") != "model" or event.namespace is None:
            return
        if event.type == EventType.MODEL_VERSION_COMMITTED:
            refs = {"latest"}
        elif event.type == EventType.MODEL_ALIAS_MOVED:
            refs = {str(data["alias"])}
        else:
            return
        for deployment in self.deployments.follow(event.namespace, str(data["name"]), refs):
            log.info("%s follows %s: new revision", deployment, event.subject)

    def start(self) -> None:
        self.consumer.start()

    def stop(self) -> None:
        self.consumer.stop()
