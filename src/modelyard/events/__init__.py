"""The event log: what happened, in order, for controllers, webhooks and the SSE stream."""
