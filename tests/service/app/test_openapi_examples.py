"""The served schema's examples name models that ship (models_store/), not ones that never existed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.app.config import Settings
from service.app.main import create_app

SHIPPED = {p.name for p in (Path(__file__).resolve().parents[3] / "models_store").iterdir() if p.is_dir()}


def _model_names(node: Any) -> Iterator[str]:
    """The model names in the schema's examples: the `model` or `name` of an example object, and the
    examples of a query or path parameter called `model` or `name`."""
    if isinstance(node, list):
        for item in node:
            yield from _model_names(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("in") in ("query", "path") and node.get("name") in ("model", "name"):
        examples = [*node.get("schema", {}).get("examples", []), *([node["example"]] if "example" in node else [])]
        yield from map(str, examples)
    for example in node.get("examples", []) if isinstance(node.get("examples"), list) else []:
        if isinstance(example, dict):
            yield from (str(example[k]) for k in ("model", "name") if k in example)
    for value in node.values():
        yield from _model_names(value)


def test_examples_name_shipped_models() -> None:
    schema = create_app(Settings(_env_file=None)).openapi()
    named = set(_model_names(schema))
    assert named, "the schema's examples name no model at all"
    assert named <= SHIPPED, f"examples name models that do not ship: {sorted(named - SHIPPED)} (shipped: {sorted(SHIPPED)})"
