"""The strategy file's JSON Schema (draft 2020-12), for editors: completion, hover help, errors.

Pydantic describes each model's long, tagged form. The YAML also takes short forms (`{send: x}`,
`{trait: country, in: [UA]}`, `entry: once`, `wait: 2d`), which the models' before-validators
rewrite; each such model describes its short forms itself, in a `__get_pydantic_json_schema__`
hook beside its validator, with the helpers below. Unions whose members a short form picks by
key use `json_schema_input_type`, so the schema never requires the `type` tag the YAML omits.

The models import this module's helpers, so the strategy model is imported only when the
schema is generated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import GetJsonSchemaHandler
from pydantic_core import CoreSchema

JsonSchema = dict[str, Any]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Where the generated file is kept (beside the examples that name it in their modeline).
SCHEMA_FILE = "schema/strategy.schema.json"
# Keys that describe a model rather than constrain it: they stay on the outside of its forms.
_ANNOTATIONS = ("title", "description", "examples", "default")


def with_forms(
    core_schema: CoreSchema,
    handler: GetJsonSchemaHandler,
    describe: Callable[[JsonSchema], None],
) -> JsonSchema:
    """A model's schema; when it describes input, `describe` adds the short forms in place
    (output is always the long form)."""
    schema: JsonSchema = handler(core_schema)
    if handler.mode == "validation":
        describe(handler.resolve_ref_schema(schema))
    return schema


def exactly_one(keys: Iterable[str]) -> JsonSchema:
    """An object with exactly one of `keys`."""
    return {"oneOf": [{"required": [key]} for key in keys]}


def at_most_one(keys: Iterable[str]) -> JsonSchema:
    """An object with none or one of `keys`."""
    listed = list(keys)
    return {
        "anyOf": [{"not": {"anyOf": [{"required": [key]} for key in listed]}}, exactly_one(listed)]
    }


def properties_of(schema: Mapping[str, Any], *, without: Iterable[str] = ()) -> JsonSchema:
    """A model schema's properties, less some."""
    skipped = set(without)
    properties: Mapping[str, Any] = schema.get("properties", {})
    return {name: value for name, value in properties.items() if name not in skipped}


def as_forms(schema: JsonSchema, *short_forms: JsonSchema) -> None:
    """Turn a model's long-form schema, in place, into `anyOf` its long form and its short
    forms; title and description stay outside, where an editor shows them."""
    long_form = {key: value for key, value in schema.items() if key not in _ANNOTATIONS}
    for key in list(schema):
        if key not in _ANNOTATIONS:
            del schema[key]
    schema["anyOf"] = [long_form, *short_forms]


def closed_object(
    properties: Mapping[str, Any], *, required: Iterable[str] = (), **more: Any
) -> JsonSchema:
    """An object with these properties and no others (what `extra="forbid"` accepts)."""
    schema: JsonSchema = {"type": "object", "properties": dict(properties)}
    needed = list(required)
    if needed:
        schema["required"] = needed
    schema["additionalProperties"] = False
    schema.update(more)
    return schema


def strategy_json_schema() -> JsonSchema:
    """The JSON Schema of a strategy file, as the loader reads it (short forms included)."""
    from orbita.model.durations import DURATION_SCHEMA, PERCENTAGE_SCHEMA
    from orbita.model.segments import WHERE_SCHEMA
    from orbita.model.strategy import Strategy

    schema = Strategy.model_json_schema(by_alias=True, mode="validation")
    schema["title"] = "Orbita strategy"
    # Values written in many places are described once (editors show the same help).
    shared = {"Duration": DURATION_SCHEMA, "Percentage": PERCENTAGE_SCHEMA, "Where": WHERE_SCHEMA}
    defs = _shared(schema.pop("$defs"), shared)
    for name, value in shared.items():
        defs[name] = {key: _shared(item, shared) for key, item in value.items()}
    return {"$schema": SCHEMA_DIALECT, **_shared(schema, shared), "$defs": defs}


def _constraints(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in schema.items() if key not in _ANNOTATIONS}


def _shared(value: Any, shared: Mapping[str, JsonSchema]) -> Any:
    """`value` with every schema that constrains like a shared one replaced by a `$ref` to
    it (its own title, description or default kept beside the reference)."""
    if isinstance(value, list):
        return [_shared(item, shared) for item in value]
    if not isinstance(value, dict):
        return value
    for name, common in shared.items():
        if value and _constraints(value) == _constraints(common):
            own = {key: item for key, item in value.items() if common.get(key) != item}
            return {"$ref": f"#/$defs/{name}", **own}
    return {key: _shared(item, shared) for key, item in value.items()}


def strategy_json_schema_text() -> str:
    """The schema as the checked-in file holds it: sorted keys, two-space indent, a newline."""
    return json.dumps(strategy_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
