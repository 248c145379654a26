"""Showing outside text on a terminal safely (infrastructure.escaping, the one home)."""

from infrastructure.escaping import printable

__all__ = ["printable"]
