"""The one error class for user mistakes.

Raise :class:`SpeclmError` for anything the user can fix (bad path, bad config, bad
data). The CLI prints its message on one line and exits with code 2. Anything else is a
bug and keeps its traceback.
"""


class SpeclmError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


def require(condition: bool, message: str) -> None:
    """Raise SpeclmError(message) unless condition holds."""
    if not condition:
        raise SpeclmError(message)
