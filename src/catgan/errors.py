"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class CatganError(Exception):
    """A user-facing error: bad input, a wrong path, a mismatched checkpoint.

    The message is one line that names the bad value and, where possible, what would be right.
    """
