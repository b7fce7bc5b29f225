"""Turn a call's ``guidance=`` argument into one combiner and its patchers."""

from __future__ import annotations

from collections.abc import Sequence

from negguide.modules.base import Combiner, GuidanceModule, Patcher, registered
from negguide.modules.negatives import NegativePrompts

GuidanceArg = GuidanceModule | str | Sequence[GuidanceModule | str] | None


def resolve_guidance(
    guidance: GuidanceArg, negative_prompt: str | list[str] | None = None
) -> tuple[Combiner, tuple[Patcher, ...]]:
    """Split ``guidance`` into its combiner (standard `NegativePrompts` when none is given) and patchers.

    Args:
        guidance: a module, a registry name (built with ``from_negative_prompt(negative_prompt)``), a list of
            those, or ``None``.
        negative_prompt: the call's ``negative_prompt``, for modules built from a name.
    """
    items = list(guidance) if isinstance(guidance, (list, tuple)) else [] if guidance is None else [guidance]
    modules = [_module(item, negative_prompt) for item in items]
    combiners = [module for module in modules if isinstance(module, Combiner)]
    if len(combiners) > 1:
        names = ", ".join(type(module).__name__ for module in combiners)
        raise ValueError(
            f"`guidance` holds {len(combiners)} combiners ({names}); a call takes one combiner and any number of "
            "patchers."
        )
    patchers = tuple(module for module in modules if isinstance(module, Patcher))
    return (combiners[0] if combiners else NegativePrompts()), patchers


def patcher_claims_negative_prompt(guidance: GuidanceArg, negative_prompt: str | list[str] | None) -> bool:
    """Whether the call's ``negative_prompt`` belongs to a patcher rather than to the combiner: ``guidance`` holds no
    combiner, and a patcher that acts on negatives itself (`Patcher.claims_negative_prompt`) is built from it
    (``guidance="nag"``) or holds it among its own negatives (``guidance=NAG(["blurry"]), negative_prompt="blurry"``).
    The default combiner then keeps the empty prompt as its baseline, so that the negative acts once, where the user
    asked."""
    if negative_prompt is None:
        return False
    items = list(guidance) if isinstance(guidance, (list, tuple)) else [] if guidance is None else [guidance]
    classes = [registered(item, "guidance") if isinstance(item, str) else type(item) for item in items]
    if any(issubclass(cls, Combiner) for cls in classes):
        return False
    return any(
        getattr(cls, "claims_negative_prompt", False) and (isinstance(item, str) or item.claims(negative_prompt))
        for item, cls in zip(items, classes)
    )


def _module(item: object, negative_prompt: str | list[str] | None) -> GuidanceModule:
    if isinstance(item, str):
        return registered(item, "guidance").from_negative_prompt(negative_prompt)
    if isinstance(item, (Combiner, Patcher)):
        return item
    raise TypeError(
        "`guidance` must be a guidance module (e.g. NegativePrompts([...])), a registered module name, or a list "
        f"of them; got {type(item).__name__} {item!r}."
    )
