"""Each function's OpenAPI document, `functions/<function>/openapi.yaml`, served at
`GET /openapi.yaml` and `GET /openapi.json`."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import yaml

from shared.core.errors import NotFound

FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"
PATHS = ("/openapi.json", "/openapi.yaml")


def path_of(function: str) -> Path:
    return FUNCTIONS_DIR / function / "openapi.yaml"


@lru_cache(maxsize=None)
def document(function: str) -> dict:
    """The parsed OpenAPI document of `function` (NotFound when it has none)."""
    path = path_of(function)
    if not path.is_file():
        raise NotFound(f"{function} has no OpenAPI document")
    return yaml.safe_load(path.read_text())


def response(function: str, path: str):
    """(body, status, headers) for GET /openapi.json or /openapi.yaml."""
    doc = document(function)
    if path.endswith(".json"):
        return json.dumps(doc, indent=2), 200, {"Content-Type": "application/json"}
    return path_of(function).read_text(), 200, {"Content-Type": "application/yaml; charset=utf-8"}
