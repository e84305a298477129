"""Errors a user can fix. The CLI prints them as one line, without a traceback."""


class UserFacingError(RuntimeError):
    """Bad input, missing weights, a disallowed licence, too many failed downloads...

    Raise it (or a subclass) with one message that names the input and says what to do.
    """


class MissingWeightsError(UserFacingError, FileNotFoundError):
    """Pretrained weights are not where they were looked for. The message names the file, the places searched and
    the command that fetches them on a machine with internet."""
