"""Captions for shapes scenes: generated from templates and synonyms, and parsed back exactly.

Grammar of every generated caption (all lower case)::

    caption  := [prefix] body [background]
    body     := group | group REL group | group ", " group " and " group | group " and " group
    group    := ("a"|"an"|"two"|"three") [size] colour kind["s"] [position]
    background := " on a(n) C background" | " against a(n) C background" | ", C background"

``describe`` writes captions from a scene; ``parse_caption`` reads one back into a
:class:`CaptionSpec`; ``caption_matches`` checks a spec against a sample's metadata. The
evaluation's exact alignment score and the tests use the same three functions.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .defaults import POSITION_PROB
from .scene import COLOURS, Scene

KIND_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square",),
    "triangle": ("triangle",),
    "star": ("star",),
    "cross": ("cross", "plus sign"),
    "ring": ("ring", "hoop"),
    "diamond": ("diamond", "rhombus"),
    "hexagon": ("hexagon",),
}
PLURALS = {"cross": "crosses", "plus sign": "plus signs", "rhombus": "rhombuses"}
COLOUR_WORDS = {name: (name,) for name in COLOURS} | {
    "grey": ("grey", "gray"),
    "purple": ("purple", "violet"),
}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
POSITION_PHRASES = {
    "top left": ("in the top left",),
    "top": ("at the top",),
    "top right": ("in the top right",),
    "left": ("on the left",),
    "centre": ("in the centre", "in the center", "in the middle"),
    "right": ("on the right",),
    "bottom left": ("in the bottom left",),
    "bottom": ("at the bottom",),
    "bottom right": ("in the bottom right",),
}
RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
PREFIXES = ("", "", "a picture of ", "an image of ", "a drawing of ")
BACKGROUND_TEMPLATES = (" on {a} {c} background", " against {a} {c} background", ", {c} background")
NUMBER_WORDS = {1: "a", 2: "two", 3: "three"}


def grammar_words() -> list[str]:
    """Every word (and the comma) any caption of the grammar can contain, sorted: e.g. the output
    vocabulary of a captioner trained on shapes."""
    kinds = [w for words in KIND_WORDS.values() for w in words]
    phrases = kinds + [PLURALS.get(w, w + "s") for w in kinds]
    for table in (COLOUR_WORDS, SIZE_WORDS, POSITION_PHRASES, RELATION_PHRASES):
        phrases += [w for words in table.values() for w in words]
    phrases += list(PREFIXES) + list(NUMBER_WORDS.values()) + ["an", "and", ","]
    phrases += [t.format(a="", c="") for t in BACKGROUND_TEMPLATES]
    return sorted({word for phrase in phrases for word in phrase.replace(",", " , ").split()})


@dataclass(frozen=True)
class GroupSpec:
    """A noun phrase: ``count`` objects of one kind and colour, optionally with size and position."""

    count: int
    colour: str
    kind: str
    size: str | None = None
    position: str | None = None


@dataclass
class CaptionSpec:
    """What a caption states: its groups, an optional relation between two groups, the background."""

    groups: list[GroupSpec] = field(default_factory=list)
    relation: str | None = None  # groups[0] <relation> groups[1]
    background: str | None = None

    @property
    def object_count(self) -> int:
        return sum(g.count for g in self.groups)


class CaptionParseError(ValueError):
    """A caption outside the shapes grammar."""


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(group: GroupSpec, rng: np.random.Generator) -> str:
    kind = _pick(rng, KIND_WORDS[group.kind])
    if group.count > 1:
        kind = PLURALS.get(kind, kind + "s")
    words = [_pick(rng, SIZE_WORDS[group.size])] if group.size else []
    words += [_pick(rng, COLOUR_WORDS[group.colour]), kind]
    phrase = " ".join(words)
    number = _article(phrase) if group.count == 1 else NUMBER_WORDS[group.count]
    if group.position:
        phrase += " " + _pick(rng, POSITION_PHRASES[group.position])
    return f"{number} {phrase}"


def describe(scene: Scene, rng: np.random.Generator, position_prob: float = POSITION_PROB) -> str:
    """One caption of ``scene``, drawn from the templates and synonyms with ``rng``.

    Objects of the same kind and colour are counted ("two blue squares"); size words appear
    with probability 0.5 (for a group only when its members share a size); a position word
    with probability ``position_prob`` per single object; a relation for two single objects with
    probability 0.6; the background with probability 0.5.
    """
    keyed: dict[tuple[str, str], list[int]] = {}
    for i, obj in enumerate(scene.objects):
        keyed.setdefault((obj.kind, obj.colour), []).append(i)
    order = [keyed[k] for k in keyed]
    order = [order[i] for i in rng.permutation(len(order))]
    with_size = rng.random() < 0.5
    groups = []
    for members in order:
        first = scene.objects[members[0]]
        sizes = {scene.objects[m].size for m in members}
        size = first.size if with_size and len(sizes) == 1 else None
        position = first.position if len(members) == 1 and rng.random() < position_prob else None
        groups.append(GroupSpec(len(members), first.colour, first.kind, size, position))
    phrases = [_noun_phrase(g, rng) for g in groups]
    relation = None
    if len(order) == 2 and len(order[0]) == len(order[1]) == 1 and rng.random() < 0.6:
        true = [rel for i, rel, j in scene.relations() if (i, j) == (order[0][0], order[1][0])]
        relation = _pick(rng, tuple(true))
        body = f"{phrases[0]} {_pick(rng, RELATION_PHRASES[relation])} {phrases[1]}"
    elif len(phrases) == 1:
        body = phrases[0]
    else:
        body = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    caption = _pick(rng, PREFIXES) + body
    if rng.random() < 0.5:
        colour = _pick(rng, COLOUR_WORDS[scene.background])
        caption += _pick(rng, BACKGROUND_TEMPLATES).format(a=_article(colour), c=colour)
    return caption


def _alternation(words: dict[str, tuple[str, ...]]) -> tuple[str, dict[str, str]]:
    lookup = {w: name for name, options in words.items() for w in options}
    pattern = "|".join(sorted(map(re.escape, lookup), key=len, reverse=True))
    return pattern, lookup


_COLOUR_RE, _COLOUR_OF = _alternation(COLOUR_WORDS)
_SIZE_RE, _SIZE_OF = _alternation(SIZE_WORDS)
_POSITION_RE, _POSITION_OF = _alternation(POSITION_PHRASES)
_RELATION_RE, _RELATION_OF = _alternation(RELATION_PHRASES)
_SINGULAR = {w: k for k, options in KIND_WORDS.items() for w in options}
_KIND_OF = _SINGULAR | {PLURALS.get(w, w + "s"): k for w, k in _SINGULAR.items()}
_KIND_RE = "|".join(sorted(map(re.escape, _KIND_OF), key=len, reverse=True))
_GROUP = re.compile(
    rf"^(?P<number>a|an|one|two|three) (?:(?P<size>{_SIZE_RE}) )?(?P<colour>{_COLOUR_RE}) "
    rf"(?P<kind>{_KIND_RE})(?: (?P<position>{_POSITION_RE}))?$"
)
_BACKGROUND = re.compile(rf"(?:,| on an?| against an?) (?P<colour>{_COLOUR_RE}) background$")
_PREFIX = re.compile(r"^(?:a picture of|an image of|a drawing of) ")
_RELATION = re.compile(rf" (?P<relation>{_RELATION_RE}) ")
_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}


def _parse_group(text: str, caption: str) -> GroupSpec:
    match = _GROUP.match(text)
    if not match:
        raise CaptionParseError(f"Cannot parse {text!r} in caption {caption!r}")
    count = _COUNTS[match["number"]]
    kind_word = match["kind"]
    if (kind_word not in _SINGULAR) != (count > 1):
        raise CaptionParseError(f"Number and noun disagree in {text!r} of caption {caption!r}")
    return GroupSpec(
        count=count,
        colour=_COLOUR_OF[match["colour"]],
        kind=_KIND_OF[kind_word],
        size=_SIZE_OF[match["size"]] if match["size"] else None,
        position=_POSITION_OF[match["position"]] if match["position"] else None,
    )


def parse_caption(caption: str) -> CaptionSpec:
    """Read a caption of the shapes grammar back into what it states (raises CaptionParseError)."""
    text = " ".join(caption.lower().strip().rstrip(".").split())
    spec = CaptionSpec()
    background = _BACKGROUND.search(text)
    if background:
        spec.background = _COLOUR_OF[background["colour"]]
        text = text[: background.start()]
    text = _PREFIX.sub("", text)
    relation = _RELATION.search(text)
    if relation:
        spec.relation = _RELATION_OF[relation["relation"]]
        parts = [text[: relation.start()], text[relation.end() :]]
    else:
        head, _, last = text.rpartition(" and ")
        parts = [*(p for p in head.split(", ") if head), last]
    spec.groups = [_parse_group(part, caption) for part in parts]
    return spec


def caption_checks(spec: CaptionSpec, meta: dict) -> dict[str, bool]:
    """Each attribute ``spec`` states, checked against a scene's metadata (its ``.json``, or a judge's reading).

    Always: ``count`` (the number of objects), ``kind`` and ``colour`` (the multisets of kinds and of
    colours), ``binding`` (the multiset of kind-colour pairs: the right colour on the right shape).
    When stated: ``size`` and ``position`` (every object of each group that states one, the group
    being its kind-colour pair's objects, and not empty), ``relation`` (it holds between some object
    of the first group and some object of the second), ``background``.
    """
    objects = meta["objects"]
    stated = Counter({(g.kind, g.colour): g.count for g in spec.groups})
    pairs = Counter((o["kind"], o["colour"]) for o in objects)
    checks = {
        "count": len(objects) == spec.object_count,
        "kind": Counter(o["kind"] for o in objects) == _totals(spec, "kind"),
        "colour": Counter(o["colour"] for o in objects) == _totals(spec, "colour"),
        "binding": pairs == stated,
    }
    members = [
        [i for i, o in enumerate(objects) if (o["kind"], o["colour"]) == (g.kind, g.colour)]
        for g in spec.groups
    ]
    for attribute in ("size", "position"):
        groups = [(g, idx) for g, idx in zip(spec.groups, members, strict=True) if getattr(g, attribute)]
        if groups:
            checks[attribute] = all(
                idx and all(objects[i][attribute] == getattr(g, attribute) for i in idx) for g, idx in groups
            )
    if spec.relation:
        relations = {(i, rel, j) for i, rel, j in meta["relations"]}
        checks["relation"] = any((i, spec.relation, j) in relations for i in members[0] for j in members[1])
    if spec.background is not None:
        checks["background"] = meta["background"]["colour"] == spec.background
    return checks


def _totals(spec: CaptionSpec, attribute: str) -> Counter:
    totals: Counter = Counter()
    for group in spec.groups:
        totals[getattr(group, attribute)] += group.count
    return totals


def caption_matches(spec: CaptionSpec, meta: dict) -> bool:
    """Whether a sample's metadata (its ``.json``) satisfies everything ``spec`` states.

    The objects must be exactly the stated ones (count, kind and colour of each group), every
    stated size and position must hold, a stated relation must hold between the two groups'
    objects, and a stated background must be the background (:func:`caption_checks`, all true).
    """
    return all(caption_checks(spec, meta).values())
