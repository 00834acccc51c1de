"""What the gateway and a replica tell each other besides the inference itself.

- Only the gateway may call a replica. Each revision has a secret of its own (`new_token`), stored
  with the revision, so a control plane that adopts running replicas after a crash still knows it.
  The orchestrator hands it to each replica in the environment variable ``TOKEN_ENV`` (never on
  the command line, which every user of the machine can read; on Kubernetes a Secret fills it),
  the routing table hands it to the gateway, and the gateway sends it in ``TOKEN_HEADER`` with
  every request it forwards. The replica compares it in constant time and answers 401 without it,
  on every path but the health probes (``OPEN_PATHS``), which supervisors and kubelets send.
  Without it anyone on the machine could call a replica's port and bypass the gateway's keys,
  roles, metrics and SLOs.
- A replica reports what it spent on a request in ``SERVICE_HEADER``, in milliseconds (what it
  covers: `modelyard.serving.server`). The canary judge compares versions on it: the gateway's
  end-to-end time also holds the queue in front of a replica, which depends on how much traffic
  the replica takes, not on the version it runs.

Free of heavy imports: the gateway imports it.
"""

from __future__ import annotations

import re
import secrets

TOKEN_ENV = "MODELYARD_REPLICA_TOKEN"
TOKEN_HEADER = b"x-modelyard-replica-token"
SERVICE_HEADER = b"x-modelyard-service-ms"
INTERNAL_HEADER = "x-modelyard-internal"
"""Sent by a replica with its own calls to the control plane (a realtime worker asks for its role
every second): the control plane logs the reads so marked that succeed at DEBUG, not as access
lines (a write is an access line whatever it is marked)."""
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
NOT_FROM_GATEWAY = (
    "this replica answers only its gateway: send requests through the gateway "
    "(/{namespace}/{deployment}/... with an API key)"
)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


def new_token() -> str:
    """A new revision's secret: 256 random bits, hex (safe in an environment and a header)."""
    return secrets.token_hex(32)


def token_line(token: str) -> bytes:
    """The request header line that carries ``token``, CRLF included: made once per routing
    table, so forwarding a request costs no encoding."""
    if not _TOKEN.fullmatch(token):
        raise ValueError("a replica token is 16 to 128 letters, digits, '-' or '_'")
    return TOKEN_HEADER + b": " + token.encode() + b"\r\n"


def service_value(seconds: float) -> bytes:
    return b"%.3f" % (seconds * 1000)


def parse_service_ms(value: bytes | None) -> float | None:
    """Milliseconds from a ``SERVICE_HEADER`` value; None when absent or not a sane number."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        return None
    return ms if 0.0 <= ms < 1e9 else None  # NaN fails both comparisons
