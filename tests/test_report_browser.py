"""The HTML report as a person sees it: real headless Chromium, no console errors, no network."""

import os
import shutil
from pathlib import Path

import pytest

from orca_analysis.report import render_report
from orca_analysis.runner import run_study
from orca_analysis.study import load_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM and os.environ.get("CI"):
    pytest.fail("CI must install Debian's chromium (see .ci/run)", pytrace=False)
pytestmark = pytest.mark.skipif(
    not CHROMIUM, reason="Debian's chromium is not installed (apt-get install chromium)"
)

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def test_html_report_loads_offline_with_figures(tiny_study_path, tmp_path):
    from playwright.sync_api import sync_playwright

    study = load_study(str(tiny_study_path))
    run_study(study, tmp_path)
    html, md = render_report(study, tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        errors: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html.resolve().as_uri())
        sizes = page.eval_on_selector_all(
            "figure svg",
            "els => els.map(e => [e.getBoundingClientRect().width, e.getBoundingClientRect().height])",
        )
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert requests == [html.resolve().as_uri()]  # nothing but the file itself
    assert len(sizes) == 2 and all(w > 100 and h > 100 for w, h in sizes)
    assert shot.stat().st_size > 10_000
    # Markdown: every figure link points at a file beside it
    links = [line.split("](")[1].rstrip(")") for line in md.read_text().splitlines() if line.startswith("![")]
    assert links and all((md.parent / link).is_file() for link in links)


def test_saves_a_screenshot_of_the_default_report_when_present():
    """Keeps a screenshot of reports/orca/report.html next to it, when `make report` has produced one."""
    html = Path("reports/orca/report.html")
    if not html.is_file():
        pytest.skip("run `make report` first to screenshot the default report")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(html.resolve().as_uri())
        page.screenshot(path=str(html.with_suffix(".png")), full_page=True)
        browser.close()
    assert html.with_suffix(".png").stat().st_size > 10_000
