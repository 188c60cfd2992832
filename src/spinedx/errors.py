"""Exceptions that the CLI turns into one-line messages.

`InputError` is for anything the user can fix (a bad file, row, column or config value):
the CLI prints ``error: <message>`` and exits with code 2. The message must name the
offending file, row or field.
"""


class SpinedxError(Exception):
    """Base class for errors raised by spinedx."""


class InputError(SpinedxError):
    """Bad user input: the message names the file, row or field at fault."""
