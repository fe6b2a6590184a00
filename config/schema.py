from drf_spectacular.generators import SchemaGenerator

from tenants.scoping import scopes_disabled


class ScopeFreeSchemaGenerator(SchemaGenerator):
    """Schema generation inspects every model's manager (never its rows), across tenants."""

    def get_schema(self, *args, **kwargs):
        with scopes_disabled():
            return super().get_schema(*args, **kwargs)


# SPEC §4's error answers, documented on every operation with the one envelope.
ERROR_RESPONSES = {
    "400": "Invalid input: the envelope's details name each field or parameter.",
    "401": "No or bad credentials.",
    "403": "Known, but not allowed for this user (e.g. a member asking an admin's action).",
    "404": "Missing, or not visible to this user (another tenant's objects are 404).",
    "405": "Method not offered here.",
    "409": "State conflict, or a quota reached (code quota_exceeded).",
    "415": "Unsupported request body type (send JSON).",
    "429": "Throttled: retry after Retry-After seconds.",
    "503": "A worker did not answer in time: retry after Retry-After seconds.",
}
ERROR_ENVELOPE = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {
            "code": {"type": "string", "example": "quota_exceeded"},
            "message": {"type": "string"},
            "details": {"type": "object", "additionalProperties": True},
        },
    }},
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular post-processing hook: every operation documents the error envelope
    for each error status the API uses (one exception handler renders them all)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_ENVELOPE
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            responses = operation.setdefault("responses", {})
            for code, description in ERROR_RESPONSES.items():
                responses.setdefault(code, {"description": description, "content": content})
    return result
