"""Pipelines: a DSL shaped like Kubeflow Pipelines v2, a local executor, caching, schedules."""
