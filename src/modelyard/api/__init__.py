"""The control plane's HTTP API under ``/api/v1``."""
