"""The one error type convert/ raises for problems the user can fix (bad model, data or output path)."""


class ConvertError(Exception):
    """User-facing: the message names the file or option and what is wrong with it."""
