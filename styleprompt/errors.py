"""User-facing errors: re-exported from `classic` so every entry point catches one type."""

from classic.errors import UserError

__all__ = ["UserError"]
