"""Backends that turn a typed archdsl graph into something that runs (installed as archdsl.backends)."""
