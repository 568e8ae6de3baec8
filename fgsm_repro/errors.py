"""The one exception type the CLI turns into a one-line error message."""


class ReproError(Exception):
    """A user-facing error: bad config, missing or corrupted data, bad arguments.

    The CLI prints ``error: <message>`` on one line and exits with status 2; nothing else.
    """
