"""The shapes-world evaluation suite: prompts and negatives whose effect the detector can measure."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from negguide.shapes.world import COLOURS, COMPANIONS, SHAPES, caption_of, phrase


@dataclass(frozen=True)
class Case:
    """One evaluation case.

    ``kind`` says what the case tests:
    ``plain`` (no negative), ``pair`` (two objects the captions often name together), ``free-pair`` (two
    objects they rarely do), ``companion`` (the negative names the prompt's frequent unnamed companion,
    sharing neither colour nor shape), ``overlap-colour`` / ``overlap-shape`` (the companion shares the
    prompt's colour / shape), ``attribute`` (the negative is a bare colour or shape the prompt also has:
    it overlaps the prompt and names the companion's other attribute), ``contradiction`` (the negative
    names the object the prompt asks for).
    """

    kind: str
    prompt: str
    negative: str | None = None


def _overlap_kind(obj: tuple[str, str], companion: tuple[str, str]) -> str:
    if obj[0] == companion[0]:
        return "overlap-colour"
    if obj[1] == companion[1]:
        return "overlap-shape"
    return "companion"


def world_objects() -> list[tuple[str, str]]:
    """Every (colour, shape) of the world, in a fixed order."""
    return [(c, s) for c in sorted(COLOURS) for s in SHAPES]


def one_object_prompts() -> list[str]:
    return [phrase(c, s) for c, s in world_objects()]


def every_pair_prompts() -> list[str]:
    """A two-object prompt for every pair of two different objects (66)."""
    return [caption_of(pair) for pair in itertools.combinations(world_objects(), 2)]


def companion_pair_prompts() -> list[str]:
    """Two-object prompts naming an object and its companion, a pairing the captions often spell out."""
    pairs = [("red", "circle"), ("yellow", "square"), ("blue", "square"), ("green", "triangle"),
             ("red", "square"), ("green", "circle")]
    return [caption_of([obj, COMPANIONS[obj]]) for obj in pairs]


def free_pair_prompts() -> list[str]:
    """Two-object prompts whose objects rarely meet in the captions: a shared colour, a shared shape, neither."""
    return ["a red circle and a blue square", "a blue triangle and a blue circle",
            "a yellow square and a green square", "a green circle and a red triangle"]


def two_object_prompts() -> list[str]:
    return companion_pair_prompts() + free_pair_prompts()


def quality_cases() -> list[Case]:
    """Every one- and two-object prompt without a negative."""
    return ([Case("plain", p) for p in one_object_prompts()] + [Case("pair", p) for p in companion_pair_prompts()]
            + [Case("free-pair", p) for p in free_pair_prompts()])


def negative_cases() -> list[Case]:
    """For every object: its companion as the negative, and the contradiction case."""
    cases = []
    for obj, companion in COMPANIONS.items():
        prompt = phrase(*obj)
        cases.append(Case(_overlap_kind(obj, companion), prompt, f"{companion[0]} {companion[1]}"))
    for obj, companion in COMPANIONS.items():
        if obj[0] == companion[0]:
            cases.append(Case("attribute", phrase(*obj), obj[0]))
        elif obj[1] == companion[1]:
            cases.append(Case("attribute", phrase(*obj), obj[1]))
    cases += [Case("contradiction", phrase(*obj), f"{obj[0]} {obj[1]}") for obj in list(COMPANIONS)[:4]]
    return cases
