"""ExportError: the one exception the exports raise for what cannot be done as asked."""


class ExportError(ValueError):
    """An export cannot be done (e.g. nothing is occupied, an unwritable file); one line."""
