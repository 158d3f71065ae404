"""Answers grouped into sets that agree, and the one member whose bytes settle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """Distinct output bytes and how many agents gave them. `output` None: only the digest is
    known (a private task's output is not kept in the clear), so it agrees by digest alone."""

    digest: str
    output: bytes | None
    agents: int


@dataclass(frozen=True)
class AgreeingSet:
    """The answers that agree with `center`; `canonical` is the member that settles."""

    center: str
    members: frozenset[str]
    agents: int
    canonical: str


def agreeing_set(center: Answer, answers: Sequence[Answer], agree: Callable[[bytes, bytes], bool]) -> AgreeingSet:
    """The answers agreeing with `center` (counted by agents; `center` itself only if listed)."""
    members = [a for a in answers if a.digest == center.digest or _agree(center, a, agree)]
    # The member most agents gave settles (their signatures cover exactly its digest); ties: lowest digest.
    canonical = min(members, key=lambda a: (-a.agents, a.digest)).digest if members else center.digest
    return AgreeingSet(center.digest, frozenset(a.digest for a in members), sum(a.agents for a in members), canonical)


def agreeing_sets(answers: Sequence[Answer], agree: Callable[[bytes, bytes], bool]) -> list[AgreeingSet]:
    """One set per distinct membership, most agents first, ties by the lowest center digest."""
    sets: dict[frozenset[str], AgreeingSet] = {}
    for center in sorted(answers, key=lambda a: a.digest):
        found = agreeing_set(center, answers, agree)
        sets.setdefault(found.members, found)
    return sorted(sets.values(), key=lambda s: (-s.agents, s.center))


def _agree(x: Answer, y: Answer, agree: Callable[[bytes, bytes], bool]) -> bool:
    return x.output is not None and y.output is not None and agree(x.output, y.output)
