"""The reports users open first, checked in a real browser (the system chromium via playwright).

Builds a reduced demo (as tests/integration/test_demo.py, on the tiny model) and the ``axislens
axis`` report of its store, loads each page and fails on a console error or page error, a plotly
figure that drew no SVG, a figure without a caption, a summary-table row without an explanation,
or the persona-space colourbar title overlapping the legend. ``make test`` installs chromium
where apt-get can; elsewhere this test skips and says why.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from axislens.jobs import run_axis, run_demo
from tests.integration.test_demo import reduced_demo_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium on PATH (make test installs it with apt-get where it can)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def reports(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = reduced_demo_config(out)
    run_demo(cfg, model=tiny_llama, progress=False)
    axis_out = tmp_path_factory.mktemp("axis")
    run_axis(out / "store", axis_out, min_score=None, min_count=2)
    return {"demo": out / "report.html", "axis": axis_out / "report.html"}


def _load(browser, path: Path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)
    return page, problems


@pytest.mark.parametrize("which", ["demo", "axis"])
def test_report_renders_every_figure_with_a_caption(browser, reports, which):
    page, problems = _load(browser, reports[which])
    try:
        figures = page.locator("div.plotly-graph-div")
        n = figures.count()
        assert n >= 4, f"{which} report has {n} figures"
        for i in range(n):
            fig = figures.nth(i)
            title = (
                fig.locator(".gtitle").first.text_content()
                if fig.locator(".gtitle").count()
                else f"#{i}"
            )
            assert fig.locator("svg.main-svg").count() > 0, f"figure {title!r} did not render"
            cap = fig.locator("xpath=ancestor::figure[1]/figcaption")
            assert cap.count() == 1, f"figure {title!r} has no caption"
            text = (cap.text_content() or "").strip()
            assert text and "\n" not in text, f"figure {title!r}: empty caption"
        notes = page.locator("td.note")
        rows = page.locator("table").first.locator("tr")
        assert notes.count() == rows.count(), "a summary row has no explanation"
        assert all((notes.nth(i).text_content() or "").strip() for i in range(notes.count()))
        assert not problems, "\n".join(problems)
    finally:
        page.close()


def _overlap(a, b) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def test_persona_space_colourbar_title_clears_the_legend(browser, reports):
    page, problems = _load(browser, reports["axis"])
    try:
        figures = page.locator("div.plotly-graph-div")
        checked = 0
        for i in range(figures.count()):
            fig = figures.nth(i)
            if "Persona space, layer" not in (fig.locator(".gtitle").first.text_content() or ""):
                continue
            title = fig.locator(".colorbar .cbtitle").first.bounding_box()
            legend = fig.locator(".legend").first.bounding_box()
            assert title is not None and legend is not None
            assert not _overlap(title, legend), f"colourbar title {title} overlaps legend {legend}"
            checked += 1
        assert checked >= 1
        assert not problems, "\n".join(problems)
    finally:
        page.close()


def test_the_overlap_check_can_fail():
    box = {"x": 0, "y": 0, "width": 10, "height": 10}
    assert _overlap(box, {"x": 5, "y": 5, "width": 10, "height": 10})
    assert not _overlap(box, {"x": 10, "y": 0, "width": 10, "height": 10})
