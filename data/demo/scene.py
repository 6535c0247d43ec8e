"""Compositional prompts, their facts, shared layouts and controlled alignment mistakes.

A prompt has one or two object *groups* (count 1-3, a colour, a shape) and, with two groups, a spatial
relation ("two red circles to the left of a blue square"). A :class:`Layout` fixes where each group
sits; every image of a prompt uses the same layout, so images differ only by their mistakes and
artifacts (minimal pairs). A mistake changes what is drawn; :func:`satisfied_facts` then checks each
fact of the prompt against what is actually drawn (relations geometrically).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

T = TypeVar("T")

#: Saturated, well-separated colours (RGB) that stay distinct after downsampling to 64 px.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 0),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
    "cyan": (0, 190, 200),
    "pink": (240, 100, 180),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
PLURALS: dict[str, str] = {"cross": "crosses"}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
RELATION_PHRASES: dict[str, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
COUNT_WORDS: dict[int, str] = {2: "two", 3: "three"}
MAX_COUNT = 3

#: Wordings around the scene description; ``{}`` is the description. Training prompts use
#: TRAINING_TEMPLATES; fresh benchmark captions use BENCHMARK_TEMPLATES, whose extra words keep them
#: well away (in edit distance) from every training prompt, as captions from another source would be.
TEMPLATES: tuple[str, ...] = (
    "{}",
    "a picture of {}",
    "a photo of {}",
    "a drawing of {}",
    "{}, flat colours",
    "{}, simple shapes",
    "{} on a plain background",
    "an image showing {}",
    "a scene with {}",
    "{}, centred in the frame",
)
TRAINING_TEMPLATES: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
BENCHMARK_TEMPLATES: tuple[int, ...] = (7, 8, 9)

#: Mistake kinds, and the MJ-Bench-style category each one tests.
MISTAKE_CATEGORIES: dict[str, str] = {
    "wrong_colour": "colour",
    "wrong_shape": "shape",
    "wrong_count": "count",
    "swapped_relation": "spatial",
    "missing_object": "existence",
}
MISTAKE_KINDS: tuple[str, ...] = tuple(MISTAKE_CATEGORIES)


@dataclass(frozen=True)
class ObjectGroup:
    """``count`` objects of one colour and shape."""

    count: int
    colour: str
    shape: str

    def describe(self) -> str:
        noun = self.shape if self.count == 1 else PLURALS.get(self.shape, self.shape + "s")
        if self.count == 1:
            article = "an" if self.colour[0] in "aeiou" else "a"
            return f"{article} {self.colour} {noun}"
        return f"{COUNT_WORDS[self.count]} {self.colour} {noun}"


@dataclass(frozen=True)
class Prompt:
    """A compositional prompt: 1-2 groups, a relation when there are two, and a wording template."""

    groups: tuple[ObjectGroup, ...]
    relation: str | None = None
    template: int = 0

    def __post_init__(self) -> None:
        if len(self.groups) not in (1, 2):
            raise ValueError(f"a prompt has 1 or 2 groups, got {len(self.groups)}")
        if (len(self.groups) == 2) != (self.relation is not None):
            raise ValueError("a relation is needed exactly when there are two groups")

    @property
    def text(self) -> str:
        scene = self.groups[0].describe()
        if self.relation is not None:
            scene = f"{scene} {RELATION_PHRASES[self.relation]} {self.groups[1].describe()}"
        return TEMPLATES[self.template].format(scene)

    @property
    def classification(self) -> str:
        """ImageRewardDB-style category string."""
        if self.relation is not None:
            return "Spatial"
        return "Counting" if self.groups[0].count > 1 else "Colour"

    def facts(self) -> list[tuple[str, int]]:
        """The checkable facts as ``(kind, group)``; the relation uses group -1."""
        facts = [
            (kind, g) for g in range(len(self.groups)) for kind in ("present", "colour", "shape", "count")
        ]
        if self.relation is not None:
            facts.append(("relation", -1))
        return facts

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "groups": [{"count": g.count, "colour": g.colour, "shape": g.shape} for g in self.groups],
            "relation": self.relation,
            "facts": [f"{kind}({group})" if group >= 0 else kind for kind, group in self.facts()],
        }


def pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    """A uniformly random element of ``options`` (faster than ``rng.choice`` for short tuples)."""
    return options[int(rng.integers(len(options)))]


def sample_prompt(
    rng: np.random.Generator,
    colours: tuple[str, ...],
    shapes: tuple[str, ...],
    two_group_fraction: float,
    templates: Sequence[int] = TRAINING_TEMPLATES,
) -> Prompt:
    """A random prompt; the two groups of a two-group prompt never share both colour and shape."""

    def group() -> ObjectGroup:
        return ObjectGroup(
            count=int(rng.integers(1, MAX_COUNT + 1)), colour=pick(rng, colours), shape=pick(rng, shapes)
        )

    first = group()
    template = pick(rng, templates)
    if rng.random() >= two_group_fraction:
        return Prompt((first,), None, template)
    second = group()
    while (second.colour, second.shape) == (first.colour, first.shape):
        second = group()
    return Prompt((first, second), pick(rng, RELATIONS), template)


@dataclass(frozen=True)
class Mistake:
    """One controlled alignment error. ``group`` is -1 for the relation; ``value`` is the wrong
    colour / shape / count that is drawn instead (None for a missing group or a swapped relation)."""

    kind: str
    group: int
    value: str | int | None = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "group": self.group, "value": self.value}


def possible_mistakes(prompt: Prompt) -> list[tuple[str, int]]:
    """All ``(kind, group)`` mistakes that apply to ``prompt``."""
    options = [
        (kind, g)
        for g in range(len(prompt.groups))
        for kind in ("wrong_colour", "wrong_shape", "wrong_count", "missing_object")
    ]
    if prompt.relation is not None:
        options.append(("swapped_relation", -1))
    return options


def _compatible(chosen: list[Mistake], kind: str, group: int) -> bool:
    for other in chosen:
        if (other.kind, other.group) == (kind, group):
            return False
        if "missing_object" in (kind, other.kind) and group == other.group:
            return False
        # A missing group hides a swap; a swap with a missing group would change nothing visible.
        if {kind, other.kind} == {"missing_object", "swapped_relation"}:
            return False
    return True


def make_mistake(
    prompt: Prompt,
    kind: str,
    group: int,
    rng: np.random.Generator,
    colours: tuple[str, ...],
    shapes: tuple[str, ...],
) -> Mistake:
    """A concrete mistake of ``kind`` on ``group`` with a random wrong value."""
    if kind in ("swapped_relation", "missing_object"):
        return Mistake(kind, group)
    target = prompt.groups[group]
    if kind == "wrong_colour":
        return Mistake(kind, group, pick(rng, [c for c in colours if c != target.colour]))
    if kind == "wrong_shape":
        return Mistake(kind, group, pick(rng, [s for s in shapes if s != target.shape]))
    if kind == "wrong_count":
        return Mistake(kind, group, pick(rng, [c for c in range(1, MAX_COUNT + 1) if c != target.count]))
    raise ValueError(f"unknown mistake kind {kind!r}")


def sample_mistakes(
    prompt: Prompt, n: int, rng: np.random.Generator, colours: tuple[str, ...], shapes: tuple[str, ...]
) -> tuple[Mistake, ...]:
    """Up to ``n`` mutually compatible mistakes (fewer only when the prompt allows no more)."""
    options = possible_mistakes(prompt)
    order = rng.permutation(len(options))
    chosen: list[Mistake] = []
    for index in order:
        if len(chosen) == n:
            break
        kind, group = options[int(index)]
        if _compatible(chosen, kind, group):
            chosen.append(make_mistake(prompt, kind, group, rng, colours, shapes))
    return tuple(sorted(chosen, key=lambda m: (m.group, m.kind)))


@dataclass(frozen=True)
class DrawnGroup:
    """What is actually drawn for one prompt group."""

    count: int
    colour: str
    shape: str
    region: int  # index into Layout.regions


@dataclass(frozen=True)
class DrawnObject:
    """One shape to draw, in canvas fractions: centre (x, y) and edge ``size``."""

    shape: str
    colour: str
    x: float
    y: float
    size: float


@dataclass(frozen=True)
class Region:
    """Where a group sits: its centre and the axis its objects line up on."""

    x: float
    y: float
    axis: str  # "row" (objects side by side) or "column" (stacked)


@dataclass(frozen=True)
class Layout:
    """The shared geometry of all images of one prompt."""

    regions: tuple[Region, ...]
    size: float  # object edge as a fraction of the canvas
    offsets: tuple[float, ...]  # perpendicular jitter per object slot (MAX_COUNT per region)
    background: tuple[int, int, int]


def sample_layout(prompt: Prompt, rng: np.random.Generator) -> Layout:
    """Random (jittered) regions for the prompt's groups in the order the relation needs."""

    def jitter(scale: float) -> float:
        return round(float(rng.uniform(-scale, scale)), 4)

    background = tuple(int(v) for v in rng.integers(218, 246, size=3))
    offsets = tuple(jitter(0.025) for _ in range(MAX_COUNT * len(prompt.groups)))
    if prompt.relation is None:
        region = Region(0.5 + jitter(0.05), 0.5 + jitter(0.12), "row")
        return Layout((region,), round(float(rng.uniform(0.21, 0.25)), 4), offsets, background)
    near, far = 0.25 + jitter(0.03), 0.75 + jitter(0.03)
    if prompt.relation in ("left of", "right of"):
        first, second = Region(near, 0.5 + jitter(0.06), "column"), Region(far, 0.5 + jitter(0.06), "column")
    else:
        first, second = Region(0.5 + jitter(0.06), near, "row"), Region(0.5 + jitter(0.06), far, "row")
    if prompt.relation in ("right of", "below"):
        first, second = second, first
    return Layout((first, second), round(float(rng.uniform(0.19, 0.23)), 4), offsets, background)


def drawn_groups(prompt: Prompt, mistakes: tuple[Mistake, ...]) -> tuple[DrawnGroup | None, ...]:
    """Per prompt group, what is drawn after applying ``mistakes`` (None: the group is missing)."""
    drawn: list[DrawnGroup | None] = [
        DrawnGroup(g.count, g.colour, g.shape, i) for i, g in enumerate(prompt.groups)
    ]
    for mistake in mistakes:
        if mistake.kind == "swapped_relation":
            drawn = [None if d is None else replace(d, region=len(drawn) - 1 - d.region) for d in drawn]
            continue
        current = drawn[mistake.group]
        if current is None:
            continue
        if mistake.kind == "missing_object":
            drawn[mistake.group] = None
        elif mistake.kind == "wrong_colour":
            drawn[mistake.group] = replace(current, colour=str(mistake.value))
        elif mistake.kind == "wrong_shape":
            drawn[mistake.group] = replace(current, shape=str(mistake.value))
        elif mistake.kind == "wrong_count":
            drawn[mistake.group] = replace(current, count=int(mistake.value))
        else:
            raise ValueError(f"unknown mistake kind {mistake.kind!r}")
    return tuple(drawn)


def group_objects(group: DrawnGroup, layout: Layout, slot_base: int) -> list[DrawnObject]:
    """The objects of one drawn group, centred on its region along the region's axis."""
    region = layout.regions[group.region]
    step = layout.size * 1.25
    objects = []
    for i in range(group.count):
        along = (i - (group.count - 1) / 2) * step
        across = layout.offsets[slot_base + i]
        x, y = (
            (region.x + along, region.y + across)
            if region.axis == "row"
            else (region.x + across, region.y + along)
        )
        objects.append(DrawnObject(group.shape, group.colour, round(x, 4), round(y, 4), layout.size))
    return objects


def scene_objects(groups: tuple[DrawnGroup | None, ...], layout: Layout) -> tuple[DrawnObject, ...]:
    """All objects to draw for ``groups`` under ``layout``."""
    objects: list[DrawnObject] = []
    for index, group in enumerate(groups):
        if group is not None:
            objects.extend(group_objects(group, layout, index * MAX_COUNT))
    return tuple(objects)


def _relation_holds(relation: str, first: list[DrawnObject], second: list[DrawnObject]) -> bool:
    if relation == "left of":
        return max(o.x for o in first) < min(o.x for o in second)
    if relation == "right of":
        return min(o.x for o in first) > max(o.x for o in second)
    if relation == "above":
        return max(o.y for o in first) < min(o.y for o in second)
    if relation == "below":
        return min(o.y for o in first) > max(o.y for o in second)
    raise ValueError(f"unknown relation {relation!r}")


def satisfied_facts(prompt: Prompt, groups: tuple[DrawnGroup | None, ...], layout: Layout) -> list[bool]:
    """For each fact of ``prompt.facts()``: does the drawn scene satisfy it?"""
    results = []
    for kind, index in prompt.facts():
        if kind == "relation":
            first, second = groups
            results.append(
                first is not None
                and second is not None
                and _relation_holds(
                    str(prompt.relation),
                    group_objects(first, layout, 0),
                    group_objects(second, layout, MAX_COUNT),
                )
            )
            continue
        drawn, target = groups[index], prompt.groups[index]
        if drawn is None:
            results.append(False)
        elif kind == "present":
            results.append(drawn.count >= 1)
        else:
            results.append(getattr(drawn, kind) == getattr(target, kind))
    return results


def satisfied_fraction(prompt: Prompt, groups: tuple[DrawnGroup | None, ...], layout: Layout) -> float:
    """Share of the prompt's facts that the drawn scene satisfies (1.0 = fully aligned)."""
    results = satisfied_facts(prompt, groups, layout)
    return sum(results) / len(results)
