"""Structured scenes and the parser from prompt text to a scene."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

from itercomp.errors import PromptError
from itercomp.world.rules import check_colors, check_rules
from itercomp.world.vocab import (
    COLORS,
    FILLS,
    NON_SPATIAL_RELATIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    SPATIAL_RELATIONS,
)


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a prompt. `size` and `fill` are None when the prompt leaves them open."""

    color: str
    shape: str
    fill: str | None = None
    size: str | None = None

    def phrase(self, article: str = "a") -> str:
        words = [article, self.size, self.fill, self.color, self.shape]
        return " ".join(w for w in words if w)

    def reference(self) -> str:
        """The short definite phrase that refers back to this object ("the blue circle")."""
        return f"the {self.color} {self.shape}"


@dataclass(frozen=True)
class Relation:
    subject: int  # index into Scene.objects
    name: str
    object: int


@dataclass(frozen=True)
class Scene:
    """Objects and the relations between them; `clauses` keeps the prompt's sentence structure."""

    objects: tuple[ObjectSpec, ...]
    relations: tuple[Relation, ...] = ()
    # Each clause is (subject index, relation name or "and", object index); rebuilds the canonical text.
    clauses: tuple[tuple[int, str, int], ...] = ()

    @property
    def aspect(self) -> str:
        if len(self.clauses) == 2:
            return "complex"
        if not self.relations:
            return "attribute_binding"
        return "spatial_relationship" if self.relations[0].name in SPATIAL_RELATIONS else "non_spatial_relationship"

    def prompt(self) -> str:
        """The canonical prompt text: "a" introduces an object, "the <color> <shape>" refers back to it."""
        seen: set[int] = set()

        def mention(i: int) -> str:
            text = self.objects[i].reference() if i in seen else self.objects[i].phrase()
            seen.add(i)
            return text

        return " and ".join(
            f"{mention(s)} and {mention(o)}" if rel == "and" else f"{mention(s)} {rel} {mention(o)}"
            for s, rel, o in self.clauses
        )

    def with_object(self, index: int, **changes) -> Scene:
        objects = list(self.objects)
        objects[index] = replace(objects[index], **changes)
        return replace(self, objects=tuple(objects))

    def with_relation(self, index: int, name: str) -> Scene:
        old = self.relations[index]
        relations = list(self.relations)
        relations[index] = replace(old, name=name)
        clauses = list(self.clauses)
        position = [k for k, c in enumerate(clauses) if c[1] != "and"][index]
        clauses[position] = (old.subject, name, old.object)
        return replace(self, relations=tuple(relations), clauses=tuple(clauses))


def prompt_id(prompt: str) -> str:
    """A stable id of a prompt: a hash of its canonical text (so paraphrases share an id)."""
    return "p" + hashlib.sha1(canonical(prompt).encode()).hexdigest()[:10]


def canonical(prompt: str) -> str:
    """The canonical text of a prompt in the world's words. Ids and splits name text, so a prompt that breaks a
    relation rule of the world (and that `parse` refuses) still has one."""
    return _read(prompt).prompt()


_ARTICLES = ("a", "an", "the")
# Longest relation first so "to the left of" is never read as a shorter one.
_RELATION_WORDS = sorted((r.split() for r in RELATIONS), key=len, reverse=True)
_VOCABULARY = (
    f"objects are 'a [small|large] [solid|hollow] <color> <shape>' with colors {', '.join(COLORS)} and shapes "
    f"{', '.join(SHAPES)}; relations are {', '.join(repr(r) for r in RELATIONS)}; "
    "prompts are '<obj> and <obj>', '<obj> <rel> <obj>' or '<obj> <rel> <obj> and <obj> <rel> <obj>'"
)


def parse(prompt: str) -> Scene:
    """Parse a prompt of any canonical template into a Scene; raise PromptError naming the offending words, or
    its subclass WorldRuleError when the words are the world's but break one of its rules (itercomp.world.rules:
    no image could satisfy them)."""
    scene = _read(prompt)
    check_rules(scene)
    return scene


def _read(prompt: str) -> Scene:
    """The scene the words describe, before the rules of its relations are checked."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError(f"empty prompt; {_VOCABULARY}")
    words = re.sub(r"[.,!?]", " ", prompt.lower()).split()
    return _Parser(prompt, words).scene()


class _Parser:
    def __init__(self, text: str, words: list[str]):
        self.text, self.words, self.pos = text, words, 0
        self.objects: list[ObjectSpec] = []

    def fail(self, what: str) -> PromptError:
        rest = " ".join(self.words[self.pos :]) or "<end of prompt>"
        return PromptError(f"cannot parse {self.text!r}: {what} at {rest!r}; {_VOCABULARY}")

    def scene(self) -> Scene:
        clauses, relations = [], []
        while True:
            subject = self.object()
            if self.peek(["and"]):
                if clauses:  # "<obj> and <obj>" is a template of its own, not a clause of `complex`
                    raise self.fail("a complex prompt joins two relation clauses")
                self.pos += 1
                clauses.append((subject, "and", self.object()))
                break
            rel = self.relation()
            obj = self.object()
            if obj == subject:
                raise self.fail(f"an object cannot be {rel} itself")
            clauses.append((subject, rel, obj))
            relations.append(Relation(subject, rel, obj))
            if self.pos == len(self.words) or len(clauses) == 2:
                break
            if not self.peek(["and"]):
                raise self.fail("expected 'and' between two clauses")
            self.pos += 1
        if self.pos != len(self.words):
            raise self.fail("unexpected words after a complete prompt")
        if clauses[0][1] == "and" and any(c[1] != "and" for c in clauses):
            raise self.fail("mixed templates")
        return Scene(tuple(self.objects), tuple(relations), tuple(clauses))

    def peek(self, phrase: list[str]) -> bool:
        return self.words[self.pos : self.pos + len(phrase)] == phrase

    def relation(self) -> str:
        for phrase in _RELATION_WORDS:
            if self.peek(phrase):
                self.pos += len(phrase)
                return " ".join(phrase)
        raise self.fail("expected a relation or 'and'")

    def object(self) -> int:
        if self.pos >= len(self.words) or self.words[self.pos] not in _ARTICLES:
            raise self.fail("expected an object starting with 'a' or 'the'")
        article = self.words[self.pos]
        self.pos += 1
        attrs: dict[str, str] = {}
        for key, options in (("size", SIZES), ("fill", FILLS)):
            if self.pos < len(self.words) and self.words[self.pos] in options:
                attrs[key] = self.words[self.pos]
                self.pos += 1
        for key, options in (("color", COLORS), ("shape", SHAPES)):
            if self.pos >= len(self.words) or self.words[self.pos] not in options:
                raise self.fail(f"expected a {key} ({', '.join(options)})")
            attrs[key] = self.words[self.pos]
            self.pos += 1
        spec = ObjectSpec(**attrs)
        if article == "the":
            matches = [
                i
                for i, known in enumerate(self.objects)
                if (known.color, known.shape) == (spec.color, spec.shape)
                and all(getattr(spec, k) in (None, getattr(known, k)) for k in ("size", "fill"))
            ]
            if len(matches) > 1:  # two earlier objects of one colour: the rule, not the reference, is at fault
                check_colors(self.objects, self.text)
            if not matches:
                raise self.fail(f"'the {spec.color} {spec.shape}' refers to no earlier object")
            return matches[0]
        self.objects.append(spec)
        return len(self.objects) - 1


__all__ = [
    "NON_SPATIAL_RELATIONS",
    "ObjectSpec",
    "Relation",
    "Scene",
    "canonical",
    "parse",
    "prompt_id",
]
