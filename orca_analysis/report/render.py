"""Render the view model with Jinja2: one self-contained HTML file and a Markdown file."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from ..catalog.files import BUILTIN_CLAIMS
from ..claims import load_catalogue
from ..claims.schema import catalogue_path
from ..errors import OrcaError
from ..kit.format import FILTERS, md_escape
from ..results import study_dir
from ..results.query import Results
from ..results.records import Provenance
from ..study.schema import NOTES_CATALOGUE, Study
from .view import build_view


def templates_dir() -> Path:
    """The report templates: package data of `orca_analysis.report` (shipped in the wheel, found through
    importlib.resources however the package is installed), or $ORCA_TEMPLATES."""
    here = Path(os.environ.get("ORCA_TEMPLATES") or str(resources.files(__package__) / "templates"))
    if not (here / "report.html.j2").is_file():
        raise OrcaError(
            f"report templates not found in {here}: reinstall orca-analysis or set ORCA_TEMPLATES"
        )
    return here


def environment(markdown: bool = False) -> Environment:
    options: dict[str, Any] = (
        {"finalize": md_escape} if markdown else {"autoescape": select_autoescape(["html.j2"])}
    )
    env = Environment(
        loader=FileSystemLoader(templates_dir()),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        **options,
    )
    env.filters.update(FILTERS)
    return env


def _provenance(results: Results) -> dict[str, Any]:
    units = results.provenance()
    fields = list(Provenance.__dataclass_fields__)
    out = (
        {f: ", ".join(sorted({u.get(f, "unknown") for u in units})) or "unknown" for f in fields}
        if units
        else {}
    )
    dates = sorted({u["date"] for u in units if u.get("date")})
    if dates:  # one line: when the stored results were measured
        out["date"] = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]} ({len(dates)} runs)"
    return out


def render_report(study: Study, out_root: Path | None = None, claims_path: Path | None = None) -> list[Path]:
    """Write report.html, report.md and figures/ under reports/<study>/; returns the two reports."""
    folder = study_dir(study.name, out_root)
    # --claims, else the study's own catalogue; a study that names none gets the findings, not the notes'
    # claims (they belong to the Orca design)
    ref = str(claims_path) if claims_path is not None else study.claims
    claims = load_catalogue(catalogue_path(ref)) if ref else []  # before the results: a bad one fails fast
    results = Results.from_store(folder)  # the store: what the study's last run asked for
    source = (
        "none: the study names no claims catalogue"
        if not ref
        else f"built-in catalogue '{ref}'"
        if ref in BUILTIN_CLAIMS
        else ref
    )
    view = build_view(study, results, _provenance(results), claims, source, notes=ref == NOTES_CATALOGUE)
    if claims:  # machine-readable verdicts, for a team's own gate on the design
        (folder / "claims.json").write_text(json.dumps(view["claims_json"], indent=2, default=str) + "\n")
    else:
        (folder / "claims.json").unlink(missing_ok=True)  # none stale from an earlier catalogue
    if view["recommendations"]:  # the remedies' before -> after and the recommended design
        text = json.dumps(view["recommendations"].json, indent=2, default=str) + "\n"
        (folder / "recommendations.json").write_text(text)
    else:
        (folder / "recommendations.json").unlink(missing_ok=True)
    fig_dir = folder / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for fig in (fig for sec in view["sections"] for fig in sec["figures"]):
        (fig_dir / f"{fig.name}.svg").write_text(fig.svg)

    def with_svg(figs, inline: bool) -> list[dict]:
        return [{**fig.__dict__, "svg": Markup(fig.svg) if inline else ""} for fig in figs]

    def sections(inline: bool) -> list[dict]:
        return [{**sec, "figures": with_svg(sec["figures"], inline)} for sec in view["sections"]]

    html_view = {**view, "sections": sections(True)}
    html = folder / "report.html"
    md = folder / "report.md"
    html.write_text(environment().get_template("report.html.j2").render(**html_view))
    md_view = {**view, "sections": sections(False)}
    md.write_text(environment(markdown=True).get_template("report.md.j2").render(**md_view))
    return [html, md]
