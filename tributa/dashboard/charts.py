"""Charts as inline SVG, drawn on the server: no chart library, no JavaScript, nothing to load."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 600, 170, 24  # viewBox units; the SVG scales to its container


def _frame(body: str, label: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}">{body}</svg>'
    )


def _axis(top_label: str, first: str, last: str) -> str:
    base = HEIGHT - PAD
    return (
        f'<line class="axis" x1="{PAD}" y1="{base}" x2="{WIDTH - 4}" y2="{base}"/>'
        f'<text class="tick" x="{PAD}" y="12">{escape(top_label)}</text>'
        f'<text class="tick" x="{PAD}" y="{HEIGHT - 6}">{escape(first)}</text>'
        f'<text class="tick end" x="{WIDTH - 4}" y="{HEIGHT - 6}">{escape(last)}</text>'
    )


def bars(points: Sequence[tuple[str, float]], label: str, fmt: Callable[[float], str] = lambda v: f"{v:g}") -> Markup:
    """One bar per (label, value); each bar's tooltip names both."""
    if not points:
        return _frame(f'<text class="tick" x="{PAD}" y="{HEIGHT // 2}">nothing yet</text>', label)
    top = max(v for _, v in points) or 1
    slot = (WIDTH - PAD - 4) / len(points)
    height = HEIGHT - 2 * PAD
    rects = []
    for i, (name, value) in enumerate(points):
        h = height * value / top
        rects.append(
            f'<rect class="bar" x="{PAD + i * slot + slot * 0.1:.1f}" y="{HEIGHT - PAD - h:.1f}" '
            f'width="{max(slot * 0.8, 1):.1f}" height="{h:.1f}"><title>{escape(name)}: {escape(fmt(value))}</title></rect>'
        )
    return _frame(_axis(f"max {fmt(top)}", points[0][0], points[-1][0]) + "".join(rects), label)


def line(
    points: Sequence[tuple[str, float]],
    label: str,
    top: float = 1.0,
    fmt: Callable[[float], str] = lambda v: f"{100 * v:.0f}%",
) -> Markup:
    """A line through (label, value) points from 0 to `top`, with a dot (and tooltip) at each."""
    if not points:
        return _frame(f'<text class="tick" x="{PAD}" y="{HEIGHT // 2}">nothing yet</text>', label)
    step = (WIDTH - PAD - 8) / max(1, len(points) - 1)
    height = HEIGHT - 2 * PAD
    xy = [(PAD + 4 + i * step, HEIGHT - PAD - height * min(v, top) / top) for i, (_, v) in enumerate(points)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    dots = "".join(
        f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{escape(name)}: {escape(fmt(v))}</title></circle>'
        for (x, y), (name, v) in zip(xy, points, strict=False)
    )
    return _frame(
        _axis(fmt(top), points[0][0], points[-1][0]) + f'<polyline class="line" points="{path}"/>' + dots, label
    )


def progress(pct: float, marker: float | None = None, label: str = "") -> Markup:
    """A bar filled to `pct` percent, with a tick at `marker` percent (a soft cap)."""
    fill = max(0.0, min(100.0, pct))
    tick = "" if marker is None else f'<rect class="cap" x="{max(0.0, min(99.5, marker)):.2f}" width="0.5" height="6"/>'
    return Markup(
        f'<svg class="progress" viewBox="0 0 100 6" preserveAspectRatio="none" role="img" aria-label="{escape(label)}">'
        f'<rect class="track" width="100" height="6"/><rect class="fill" width="{fill:.2f}" height="6"/>{tick}</svg>'
    )
