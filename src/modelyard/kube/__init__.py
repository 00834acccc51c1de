"""Kubernetes as the engine for more than one machine, operator-less.

The control plane writes plain core objects with server-side apply under its own field manager
and watches Pods: ``render`` turns revisions into manifests (pure functions), ``api`` is the small
HTTP client, ``orchestrator`` is the `Orchestrator` that drives them, ``config`` says which
cluster and which namespaces. Pipeline steps run as Jobs through ``jobs`` (the ``kubernetes`` step
backend), rendered by ``steps``. Nothing here is imported unless ``orchestrator`` or
``step_backend`` is ``kubernetes``, except the settings model.
"""
