"""Persistence: the metadata database and the content-addressed blob store."""
