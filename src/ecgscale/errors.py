"""User-facing errors: one line naming what and where, and what was expected.

The CLI prints a `UserError` without a traceback and exits with status 2; any other exception is a
bug and may show one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pydantic


class UserError(Exception):
    """A problem with the user's input (a path, a file, an option), not with ecgscale."""


class DataError(UserError):
    """A dataset folder or file that does not follow the expected layout."""


class ConfigError(UserError):
    """An invalid option or configuration value."""


def validation_message(exc: pydantic.ValidationError) -> str:
    """One line from a pydantic error: the field path, the problem and the value given (a
    validator's own message names its values)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or exc.title
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] != "value_error":
        message += f" (got {err.get('input')!r})"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{more}"
