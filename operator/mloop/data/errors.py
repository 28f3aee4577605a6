"""Errors that name what is wrong with the data, so the Dataset's condition can say it."""


class DataError(Exception):
    """Bad data or a bad source: the message names the object, column or rows at fault."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message
