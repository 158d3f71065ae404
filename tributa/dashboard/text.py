"""Matched spans marked in a text: the whole output, or excerpts of a dataset.

A span names the output tokens it covers and their decoded text; the text is what is searched
for here, so neither side needs the tokenizer (a span's text always occurs in the output, and
verbatim in the dataset it was found in, up to the tokenizer's whitespace at its edges)."""

from __future__ import annotations

from collections.abc import Iterable

from markupsafe import Markup, escape

EXCERPT_CONTEXT = 160  # characters shown either side of a match in a dataset


def find_ranges(text: str, needles: Iterable[str]) -> list[tuple[int, int]]:
    """Character ranges of every occurrence of each needle, merged where they overlap."""
    ranges = []
    for needle in {n.strip() for n in needles if n and n.strip()}:
        at = text.find(needle)
        while at >= 0:
            ranges.append((at, at + len(needle)))
            at = text.find(needle, at + len(needle))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def marked(text: str, ranges: list[tuple[int, int]], start: int = 0, end: int | None = None) -> Markup:
    """text[start:end], HTML-escaped, with <mark> around the ranges inside it."""
    end = len(text) if end is None else end
    out, at = [], start
    for a, b in ranges:
        a, b = max(a, start), min(b, end)
        if a >= b:
            continue
        out += [escape(text[at:a]), Markup("<mark>"), escape(text[a:b]), Markup("</mark>")]
        at = b
    out.append(escape(text[at:end]))
    return Markup("").join(out)


def highlight(text: str, needles: Iterable[str]) -> Markup:
    return marked(text, find_ranges(text, needles))


def excerpts(text: str, needles: Iterable[str], limit: int = 8) -> list[Markup]:
    """Windows of the text around its matches (neighbouring windows joined), each marked."""
    ranges = find_ranges(text, needles)
    windows: list[list[int]] = []
    for a, b in ranges:
        lo, hi = max(0, a - EXCERPT_CONTEXT), min(len(text), b + EXCERPT_CONTEXT)
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = hi
        else:
            windows.append([lo, hi])
    return [
        Markup("").join(
            [
                Markup("… ") if lo else Markup(""),
                marked(text, ranges, lo, hi),
                Markup(" …") if hi < len(text) else Markup(""),
            ]
        )
        for lo, hi in windows[:limit]
    ]
