"""Report: stored results -> the query -> sections, claims and findings -> Jinja2 (HTML and Markdown).

Kept light: measurements import its figures and formats to build their sections.
"""

from __future__ import annotations

from typing import Any


def render_report(*args: Any, **kwargs: Any) -> Any:
    from .render import render_report as render

    return render(*args, **kwargs)


__all__ = ["render_report"]
