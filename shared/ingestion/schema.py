"""Schema validation of records: a mismatch fails fast and names the field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class SchemaError(ValueError):
    """A record does not match its declared schema."""

    def __init__(self, schema: str, field: str, problem: str) -> None:
        self.schema = schema
        self.field = field
        self.problem = problem
        super().__init__(f"{schema}: field '{field}' {problem}")


def validate_record(model: type[M], data: Any) -> M:
    """Validate `data` against `model`, raising SchemaError for the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "<record>"
        msg = err.get("msg", "is invalid")
        # Only the first letter is lowered: patterns and values in the message stay as written.
        raise SchemaError(model.__name__, field, msg[:1].lower() + msg[1:]) from exc
