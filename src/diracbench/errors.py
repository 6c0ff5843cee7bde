"""User-facing errors: one clear line that names the file or key and the fix."""


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint, weights), not a bug.

    The command-line entry points print it as a single line and exit with status 2,
    without a traceback, and without leaving a partial output behind.
    """
