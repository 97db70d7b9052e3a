"""The one exception a user mistake raises.

Why a single type: every entry point (CLI, app, scripts) catches it and prints its message as
one line with exit code 2, so a bad file or flag never shows a traceback. It lives in this leaf
module (no imports at all) so that `classic` raises the same type without `styleprompt`'s
heavy parts, and without owning the project's plumbing itself.
"""


class UserError(Exception):
    """A problem with the user's input: the message says what is wrong and what to do."""
