"""The model repository: namespaces, models and datasets, immutable versions, aliases."""
