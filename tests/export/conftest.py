from tiny_export import tiny_export  # noqa: F401  (the shared session fixture)
