"""User-facing errors: one line naming what and where, and what was expected.

The CLI prints a `UserError` without a traceback and exits with status 2; any other exception is a
bug and may show one.
"""


class UserError(Exception):
    """A problem with the user's input (a path, a file, an option), not with ecgscale."""


class DataError(UserError):
    """A dataset folder or file that does not follow the expected layout."""


class ConfigError(UserError):
    """An invalid option or configuration value."""
