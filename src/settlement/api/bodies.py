"""A JSON request body validated by pydantic-core straight from its bytes, for the cashier's hot path.

FastAPI parses a body with the standard json module and then validates the Python objects; for a 24-line bill
that is twice the work of `model_validate_json` on the bytes (docs/performance.md). An endpoint that takes its
body this way declares it with `openapi_extra=documented(Model)` and reads it with `await read(request, Model)`:
the OpenAPI document, the accepted content types and the validation errors (RequestValidationError, located
under "body") stay those FastAPI gives a body parameter.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

Model = TypeVar("Model", bound=BaseModel)

_REF = "#/components/schemas/{model}"


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """The route's request body in the OpenAPI document, as FastAPI writes one for a body parameter."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}}}


def add_schemas(app: FastAPI, *models: type[BaseModel]) -> None:
    """Put the models read by `read` (and the models they use) among the OpenAPI document's components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            _, top = models_json_schema([(model, "validation") for model in models], ref_template=_REF)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in top.get("$defs", {}).items():
                schemas.setdefault(name, schema)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _is_json(content_type: str | None) -> bool:
    # FastAPI's rule with strict content types (its default): application/json or application/*+json only.
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def read(request: Request, model: type[Model]) -> Model:
    body = await request.body()
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if not _is_json(request.headers.get("content-type")):
        raise RequestValidationError([{
            "type": "model_attributes_type", "loc": ("body",), "input": None,
            "msg": "Input should be a valid dictionary or object to extract fields from"}])
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        # Values are not kept: they may be ID numbers or names.
        raise RequestValidationError([{**item, "loc": ("body", *item["loc"])}
                                      for item in error.errors(include_input=False, include_url=False)]) from None
