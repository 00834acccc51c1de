"""Serving: runtimes, the model server, the autoscaler."""
