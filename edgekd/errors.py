"""The one exception type users see: the CLI prints its message as one line and exits non-zero."""


class EdgekdError(Exception):
    """A problem with the user's input or environment, described in one line."""
