"""The one exception the command line turns into one line and exit status 2."""


class KblError(Exception):
    """Bad input or state a user can fix: the message names the file, line or field."""
