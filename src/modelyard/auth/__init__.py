"""API keys and per-namespace roles."""
