"""Kubernetes as the engine for more than one machine, operator-less.

The control plane writes plain core objects with server-side apply under its own field manager
and watches Pods: ``render`` turns revisions into manifests (pure functions), ``api`` is the small
HTTP client, ``orchestrator`` is the `Orchestrator` that drives them, ``config`` says which
cluster and which namespaces. Nothing here is imported unless ``orchestrator = "kubernetes"``,
except the settings model.
"""
