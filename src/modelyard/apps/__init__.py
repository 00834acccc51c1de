"""Reference applications built on modelyard."""
