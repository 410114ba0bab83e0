"""Syntax tree → typed graph IR: blocks, parameters, repetition and defaults are expanded,
every node gets its scoped name, and shapes are inferred as nodes are made (so `{in_channels}`
style questions can be answered, and errors name both the producer and the consumer)."""

from .elaborator import Elaborator
from .scopes import Abort

__all__ = ["Abort", "Elaborator"]
