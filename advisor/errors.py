"""User-facing errors: printed as one line, non-zero exit, never a traceback."""


class UserError(Exception):
    """Bad input or an impossible request; the message names the file/field and what was expected."""

    exit_code = 2
