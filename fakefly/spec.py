"""The Fly Machines OpenAPI document as validators for every request and response body fakefly sees.

`fly-machines-openapi.json` is a verbatim copy of https://docs.machines.dev/spec/openapi3.json (as published in
alchemy-run/distilled-spec-fly-io `specs/openapi.json` @ fcf62f10f089a9d9a7ecbb5d7f9b0b7dbe41da30, 2026-05-07).
The document is not strictly valid OpenAPI (operationId `Machines_update_metadata` is used twice), so bodies are
validated directly against its schemas with jsonschema, resolving `$ref`s through a `referencing` registry.

`_amend` and `_UNDECLARED_QUERY_PARAMETERS` are the only places where fakefly departs from the document: what
Fly is documented to do but the document omits or gets wrong (reference `fly-machines-api.md`, sections 10, 12,
17). Every object schema also refuses
properties it does not declare: Fly ignores unknown fields, so a misspelt one (`app_name` for `name`) would
silently do nothing in production; here it fails the test that sent it.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from pathlib import Path

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC_PATH = Path(__file__).with_name("fly-machines-openapi.json")
_SPEC_URI = "urn:fakefly:fly-machines-openapi"

# Query parameters Fly accepts that the document does not declare (reference section 17).
_UNDECLARED_QUERY_PARAMETERS = {
    ("delete", "/apps/{app_name}"): lambda name: name == "force",
    ("get", "/apps/{app_name}/machines"): lambda name: name.startswith("metadata."),
}
# Go's strconv.ParseBool, which Fly uses for boolean query parameters.
_BOOLEAN_WORDS = {"1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
                  "0": False, "f": False, "F": False, "false": False, "FALSE": False, "False": False}


class SpecViolation(AssertionError):
    """fakefly produced a response its own spec refuses: a bug in the fake, never the client's fault."""


def _amend(spec: dict) -> None:
    schemas = spec["components"]["schemas"]
    # Error codes Fly sends that the enum lacks (docs "Errors"; fly-go flaps/flaps_error.go).
    schemas["main.statusCode"]["enum"] += ["name_taken", "volume_placement_capacity"]
    # The schema's own description: requests may send booleans, and responses render "off"/"stop" as false/true.
    autostop = schemas["fly.MachineService"]["properties"]["autostop"]
    autostop["type"] = ["string", "boolean"]
    autostop["enum"] += [False, True]
    # `null` deletes a secret (said only in the request's description).
    schemas["AppSecretsUpdateRequest"]["properties"]["values"]["additionalProperties"] = {"type": ["string", "null"]}
    # The docs' certificate examples answer null for these.
    schemas["CertificateDetail"]["properties"]["rate_limited_until"]["type"] = ["string", "null"]
    schemas["CertificateCheckResponse"]["properties"]["rate_limited_until"]["type"] = ["string", "null"]
    schemas["CertificateEntry"]["properties"]["issuer"]["type"] = ["string", "null"]
    schemas["createAcmeCertificateRequest"]["required"] = ["hostname"]
    schemas["assignIPRequest"]["required"] = ["type"]
    # An unattached volume answers null (docs example).
    for attachment in ("attached_machine_id", "attached_alloc_id"):
        schemas["Volume"]["properties"][attachment]["type"] = ["string", "null"]

    # Requirements the docs state and the document does not mark.
    schemas["CreateAppRequest"]["required"] = ["name", "org_slug"]
    schemas["CreateVolumeRequest"]["required"] = ["name", "region"]
    schemas["CreateVolumeRequest"]["properties"]["size_gb"].update(minimum=1, maximum=500)
    schemas["CreateVolumeRequest"]["properties"]["snapshot_retention"].update(minimum=1, maximum=60)
    schemas["CreateMachineRequest"]["required"] = ["config"]
    schemas["UpdateMachineRequest"]["required"] = ["config"]
    schemas["fly.MachineConfig"]["required"] = ["image"]
    schemas["fly.MachineConfig"]["properties"]["image"]["minLength"] = 1
    schemas["fly.MachineGuest"]["properties"]["memory_mb"].update(multipleOf=256, minimum=256)
    schemas["fly.File"]["anyOf"] = [{"required": [source]} for source in ("raw_value", "secret_name", "image_config")]
    schemas["upsertMetadataKeyRequest"]["required"] = ["value"]

    # Bodies the docs show where the document declares none, or a different shape.
    schemas["fakefly.AppCreated"] = {
        "type": "object", "required": ["id", "created_at"],
        "properties": {"id": {"type": "string"}, "created_at": {"type": "integer"}},
    }
    schemas["fakefly.LeaseEnvelope"] = {
        "type": "object", "required": ["status", "data"],
        "properties": {"status": {"type": "string"}, "data": {"$ref": "#/components/schemas/Lease"}},
    }
    schemas["fakefly.StartResponse"] = {
        "type": "object", "required": ["previous_state"],
        "properties": {"previous_state": {"type": "string"}, "migrated": {"type": "boolean"},
                       "new_host": {"type": "string"}},
    }
    schemas["fakefly.Ok"] = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}


def _forbid_undeclared_properties(schema: object) -> None:
    """Walks schema keywords only (a property may itself be called "properties")."""
    if not isinstance(schema, dict):
        return
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    for keyword in ("properties", "patternProperties"):
        for child in schema.get(keyword, {}).values():
            _forbid_undeclared_properties(child)
    for keyword in ("items", "additionalProperties", "not"):
        _forbid_undeclared_properties(schema.get(keyword))
    for keyword in ("allOf", "anyOf", "oneOf"):
        for child in schema.get(keyword, []):
            _forbid_undeclared_properties(child)


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


class Spec:
    """Validators for the bodies and query strings of the operations in the document, after `_amend`."""

    def __init__(self, document: dict):
        self.document = copy.deepcopy(document)
        _amend(self.document)
        for schema in self.document["components"]["schemas"].values():
            _forbid_undeclared_properties(schema)
        self._registry = Registry().with_resource(_SPEC_URI, Resource(self.document, DRAFT4))
        self._validators: dict[str, jsonschema.Draft4Validator] = {}

    def operation(self, method: str, template: str) -> dict:
        return self.document["paths"][template][method.lower()]

    def _errors(self, pointer: str, instance: object) -> list[str]:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = jsonschema.Draft4Validator({"$ref": f"{_SPEC_URI}#/{pointer}"}, registry=self._registry)
            self._validators[pointer] = validator
        return [f"{'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
                for error in validator.iter_errors(instance)]

    def _schema_errors(self, name: str, instance: object) -> list[str]:
        return self._errors(_pointer("components", "schemas", name), instance)

    def request_errors(self, method: str, template: str, query: Mapping[str, list[str]],
                       headers: Mapping[str, str], body: object) -> list[str]:
        """What is wrong with a request, or nothing. `headers` keys are lower case; `body` None means absent."""
        method = method.lower()
        operation = self.operation(method, template)
        errors = []
        declared = {parameter["name"]: parameter for parameter in operation.get("parameters", [])}
        undeclared_allowed = _UNDECLARED_QUERY_PARAMETERS.get((method, template), lambda name: False)
        for name, values in query.items():
            parameter = declared.get(name)
            if parameter is None or parameter["in"] != "query":
                if not undeclared_allowed(name):
                    errors.append(f"query {name}: not a parameter of {method.upper()} {template}")
                continue
            for value in values:
                errors += self._parameter_errors(parameter, value)
        for parameter in declared.values():
            if not parameter.get("required"):
                continue
            present = parameter["name"] in query if parameter["in"] == "query" else (
                parameter["name"].lower() in headers if parameter["in"] == "header" else True)
            if not present:
                errors.append(f"{parameter['in']} {parameter['name']}: required")

        content = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            if body is not None:
                errors.append(f"(body): {method.upper()} {template} takes no body")
        elif body is None:
            if operation["requestBody"].get("required"):
                errors.append("(body): required")
        else:
            errors += self._errors(_pointer("paths", template, method, "requestBody", "content",
                                            "application/json", "schema"), body)
        return errors

    def _parameter_errors(self, parameter: dict, raw: str) -> list[str]:
        schema = parameter.get("schema", {})
        # Enumerated strings (wait's `state`) may be repeated or comma separated.
        values = raw.split(",") if "enum" in schema else [raw]
        errors = []
        for value in values:
            coerced: object = value
            if schema.get("type") == "boolean":
                coerced = _BOOLEAN_WORDS.get(value, value)
            elif schema.get("type") == "integer":
                try:
                    coerced = int(value)
                except ValueError:
                    pass
            errors += [f"query {parameter['name']}: {error.message}"
                       for error in jsonschema.Draft4Validator(schema).iter_errors(coerced)]
        return errors

    def response_errors(self, method: str, template: str, status: int, body: object,
                        schema_name: str | None = None) -> list[str]:
        """What is wrong with a response. `schema_name` names the schema when the operation declares none
        for this status or declares the wrong one (a `fakefly.*` schema from `_amend`)."""
        method = method.lower()
        if schema_name is not None:
            return self._schema_errors(schema_name, body)
        declared = self.operation(method, template).get("responses", {}).get(str(status), {})
        if "application/json" in declared.get("content", {}):
            return self._errors(_pointer("paths", template, method, "responses", str(status), "content",
                                         "application/json", "schema"), body)
        if status >= 400:
            return self._schema_errors("ErrorResponse", body)
        return [] if body is None else [f"(body): {method.upper()} {template} declares no body for {status}"]


@functools.cache
def load_spec() -> Spec:
    return Spec(json.loads(SPEC_PATH.read_text()))
