"""The one error type of the expression language."""

from __future__ import annotations


class ExpressionError(ValueError):
    """A syntax or evaluation error. The message says what and where (1-based column)."""

    def __init__(self, message: str, expression: str | None = None, offset: int | None = None):
        self.message = message
        self.expression = expression
        self.offset = offset
        if expression is not None and offset is not None:
            text = f"{message} (at column {offset + 1} of {expression!r})"
        elif expression is not None:
            text = f"{message} (in {expression!r})"
        else:
            text = message
        super().__init__(text)

    def located(self, expression: str, offset: int) -> ExpressionError:
        """This error with a position, unless it already has one."""
        if self.expression is not None:
            return self
        return ExpressionError(self.message, expression, offset)
