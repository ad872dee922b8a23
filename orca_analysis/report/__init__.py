"""Report: results -> view model -> figures -> Jinja2 (HTML and Markdown)."""

from .render import render_report

__all__ = ["render_report"]
