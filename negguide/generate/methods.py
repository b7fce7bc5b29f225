"""The methods of a batch run: each a list of registered guidance modules with their settings.

Modules are named as the registry knows them (`negguide.register_guidance`), so any module, built in or
added later, takes part without changes here. A module named without settings is the module the pipeline
builds for ``guidance="<name>"`` (``from_negative_prompt``); settings are applied on top of it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from negguide.generate.names import slug
from negguide.modules.base import Combiner, GuidanceModule, dataclass_kwargs, registered
from negguide.modules.negatives import NegativePrompts
from negguide.modules.resolve import resolve_guidance

NEGATIVES = "negatives"


@dataclass(frozen=True)
class Method:
    """One method of a comparison.

    Args:
        label (`str`): its name in file names, grids and the manifest.
        modules (`tuple[dict, ...]`): ``{"name": <registry name>, <setting>: <value>, ...}`` per module: at
            most one combiner and any number of patchers. With no combiner the pipeline's standard
            negative prompts act.
    """

    label: str
    modules: tuple[dict[str, Any], ...]

    @property
    def names(self) -> list[str]:
        return [module["name"] for module in self.modules]


DEFAULT_METHOD = Method(NegativePrompts.name, ({"name": NegativePrompts.name},))


def parse_method(spec: str, argument: str) -> Method:
    """A method from ``[LABEL=]NAME[+NAME...]``, e.g. ``perpneg``, ``mix=negative_prompts+negtome``."""
    label, _, names = spec.rpartition("=")
    parts = [name.strip() for name in names.split("+")]
    if not all(parts):
        raise ValueError(f"`{argument}`: {spec!r} is not [LABEL=]NAME[+NAME...], e.g. 'negative_prompts'.")
    return method_from_config(label.strip() or None, parts, argument)


def method_from_config(label: str | None, value: object, argument: str) -> Method:
    """A method from a config file or a prompts file: ``"NAME+NAME"``, or a list whose entries are
    registry names or ``{"name": ..., <setting>: ...}`` mappings."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split("+")]
    if not isinstance(value, list) or not value:
        raise TypeError(f"`{argument}` must be a module name or a non-empty list of modules, got {value!r}.")
    modules = []
    for entry in value:
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise TypeError(f"`{argument}`: each module is a name or a mapping with a 'name', got {entry!r}.")
        modules.append(dict(entry))
    return checked(Method(label or "+".join(module["name"] for module in modules), tuple(modules)), argument)


def apply_setting(methods: Sequence[Method], assignment: str, argument: str) -> tuple[Method, ...]:
    """``methods`` with ``NAME.KEY=VALUE`` set in every module called NAME; VALUE is read as JSON when it
    parses, as text otherwise."""
    target, equals, text = assignment.partition("=")
    name, dot, key = target.strip().partition(".")
    if not equals or not dot or not name or not key:
        raise ValueError(
            f"`{argument}`: {assignment!r} is not NAME.KEY=VALUE, e.g. 'negative_prompts.guidance_rescale=0.7'."
        )
    if not any(name in method.names for method in methods):
        used = ", ".join(sorted({n for method in methods for n in method.names}))
        raise ValueError(f"`{argument} {target}`: no method uses module {name!r}; the methods use: {used}.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    updated = []
    for method in methods:
        modules = tuple({**module, key: value} if module["name"] == name else module for module in method.modules)
        updated.append(checked(Method(method.label, modules), f"{argument} {target}"))
    return tuple(updated)


def check_labels(methods: Sequence[Method], argument: str) -> None:
    """ValueError unless every label gives a distinct, non-empty file-name slug."""
    seen: dict[str, str] = {}
    for method in methods:
        key = slug(method.label)
        if key in seen:
            raise ValueError(f"`{argument}`: methods {seen[key]!r} and {method.label!r} share the file name {key!r}.")
        seen[key] = method.label


PLACEHOLDER_NEGATIVE = "negative"
"""The negative prompt a method's modules are built with to check their settings, before any item's is known
(modules that take their negative from the call, such as `NAG`, refuse an empty one)."""


def with_negatives(method: Method, negatives: list[dict[str, Any]]) -> Method:
    """``method`` with an item's own weighted, windowed negatives given to every module that has a
    ``negatives`` setting; a method without a combiner gets them through the standard `NegativePrompts`."""
    takes = [NEGATIVES in _fields(registered(name, "method")) for name in method.names]
    if any(takes):
        modules = tuple(
            {**module, NEGATIVES: negatives} if take else module for module, take in zip(method.modules, takes)
        )
    elif not any(issubclass(registered(name, "method"), Combiner) for name in method.names):
        modules = ({"name": NegativePrompts.name, NEGATIVES: negatives}, *method.modules)
    else:
        raise ValueError(f"method {method.label!r} has no module with a `negatives` setting; use `negative_prompt`.")
    return Method(method.label, modules)


def build_guidance(
    modules: Sequence[Mapping[str, Any]], negative_prompt: str | list[str], argument: str = "guidance"
) -> list[GuidanceModule]:
    """The module objects of a pipeline call whose ``negative_prompt`` is ``negative_prompt``.

    Raises:
        ValueError: naming ``argument``, for an unknown module name or setting, or a setting the module rejects.
    """
    built = []
    for spec in modules:
        cls = registered(spec["name"], argument)
        try:
            settings = dataclass_kwargs(cls, {key: value for key, value in spec.items() if key != "name"})
            module = cls.from_negative_prompt(negative_prompt)
            built.append(dataclasses.replace(module, **settings) if settings else module)
        except (TypeError, ValueError) as error:
            raise ValueError(f"`{argument}`: {spec['name']}: {error}") from None
    return built


def checked(method: Method, argument: str) -> Method:
    """``method`` after building its modules once and splitting them into a combiner and patchers; ValueError
    naming ``argument`` when they are invalid."""
    if not slug(method.label):
        raise ValueError(f"`{argument}`: label {method.label!r} needs at least one letter or digit.")
    modules = build_guidance(method.modules, PLACEHOLDER_NEGATIVE, argument)
    try:
        resolve_guidance(modules)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{argument}`: {error}") from None
    return method


def _fields(cls: type) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)}
