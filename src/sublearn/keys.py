"""Which fields of a config a task's key hashes, declared on the fields themselves.

Like ``datasets``' ``ignore_kwargs``, a field's place in a task's key is declared where the
field is defined, not decided where the task is planned:

- a speed field (:data:`SPEED_MARK`, :func:`speed_field`) changes only how fast the output
  comes (device, batch and chunk sizes, threads); it is never hashed. At a task params
  model's top level these fields make the task's ``runtime``.
- a later field (:data:`LATER_MARK`, :func:`later_field`) was added after tasks were first
  keyed; it is left out while it holds its default, so those tasks keep their keys.
- any other field is hashed.

A leaf module (pydantic only), so every config module can declare its fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

KEY = "key"
"""The ``json_schema_extra`` entry that declares a field's place in the key."""
SPEED: Literal[False] = False
"""Never hashed: the field only changes speed."""
LATER = "unless_default"
"""Hashed only when it differs from its default (a field added after keys existed)."""

SPEED_MARK: dict[str, Any] = {KEY: SPEED}
"""``json_schema_extra`` of a speed-only field (for models that use plain ``Field``)."""
LATER_MARK: dict[str, Any] = {KEY: LATER}
"""``json_schema_extra`` of a field added after tasks were first keyed."""


def speed_field(default: Any, description: str, **kwargs: Any) -> Any:
    """A field that only changes speed: out of the key, in the task's runtime."""
    return Field(default, description=description, json_schema_extra=SPEED_MARK, **kwargs)


def later_field(default: Any, description: str, **kwargs: Any) -> Any:
    """A field added after tasks were first keyed: hashed only when not its default."""
    return Field(default, description=description, json_schema_extra=LATER_MARK, **kwargs)


def key_rule(info: FieldInfo) -> bool | str:
    """A field's declared place in the key: True (hashed), :data:`SPEED` or :data:`LATER`."""
    extra = info.json_schema_extra
    return extra.get(KEY, True) if isinstance(extra, dict) else True  # pyright: ignore[reportReturnType]


def _default(info: FieldInfo) -> Any:
    return info.get_default(call_default_factory=True)


def _exclusions(value: Any) -> Any:
    """The ``exclude`` tree of ``model_dump`` that drops what the key leaves out."""
    if isinstance(value, BaseModel):
        tree: dict[Any, Any] = {}
        for name, info in type(value).model_fields.items():
            rule, field = key_rule(info), getattr(value, name)
            if rule is SPEED or (rule == LATER and field == _default(info)):
                tree[name] = True
            elif (sub := _exclusions(field)) is not None:
                tree[name] = sub
        return tree or None
    if isinstance(value, list | tuple):
        items = {i: sub for i, v in enumerate(value) if (sub := _exclusions(v)) is not None}
        return items or None
    if isinstance(value, dict):
        entries = {k: sub for k, v in value.items() if (sub := _exclusions(v)) is not None}
        return entries or None
    return None


def key_params(model: BaseModel) -> dict[str, Any]:
    """What a task's key hashes: the model as JSON, without speed fields (at any depth)
    and without later fields that hold their defaults."""
    return model.model_dump(mode="json", exclude=_exclusions(model))


def runtime_params(model: BaseModel) -> dict[str, Any]:
    """The model's top-level speed fields as JSON: a task's ``runtime``."""
    speed = {name for name, info in type(model).model_fields.items() if key_rule(info) is SPEED}
    return model.model_dump(mode="json", include=speed)


def speed_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of every field declared speed-only in ``model`` and the models it nests."""
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        if key_rule(info) is SPEED:
            paths.add(prefix + name)
        for sub in _nested_models(info.annotation):
            paths |= speed_paths(sub, f"{prefix}{name}.")
    return paths


def field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of every field of ``model`` and the models it nests."""
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        paths.add(prefix + name)
        for sub in _nested_models(info.annotation):
            paths |= field_paths(sub, f"{prefix}{name}.")
    return paths


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a field's annotation (unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _nested_models(arg)]
