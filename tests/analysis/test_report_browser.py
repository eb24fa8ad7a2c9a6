"""The release report in a real browser: headless Chromium (the system's, installed by `make test`) driven by
Playwright. A report written by analysis.report.write_report from a real release (test_report's fixture:
a real Evaluation, contracts checked, thresholds edited and approved by a person) is opened from disk, as a
person opens a file they were sent, with the network cut off.

Checked: no console error or page error; the decision banner and the contracts' judgements on the first
screen (1280 x 900); the merchant table holds every merchant, sorts by a heading (both ways) and filters by
search, segment and "edited only"; a phone-sized screen shows the banner. Screenshots are kept as test
artifacts under var/test-artifacts/report-browser/."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.analysis.test_report import _between, approved_release

from analysis.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("FRAUDCD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture
def artifacts(request) -> Path:
    d = request.config.rootpath / "var" / "test-artifacts" / "report-browser"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def report(home, monkeypatch) -> tuple[Path, dict]:
    """A written report of an approved release (one merchant edited by dana, the smallest left out), and
    its merchant data as the page carries it."""
    from release.core.settings import paths

    rid, folder, ev, top = approved_release(home, monkeypatch, edited=1)
    path = write_report(rid, folder, paths().reports)
    raw = path.read_text()
    data = json.loads(_between(raw, 'id="merchant-data">', "</script>").split(">", 1)[1])
    return path, {"ev": ev, "top": top, "data": data}


def _open(p, viewport: dict):
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    context = browser.new_context(viewport=viewport, offline=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return browser, page, errors


def _column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(f"#merchants tbody tr td:nth-child({index})", "tds => tds.map(t => t.innerText)")


def test_the_report_reads_and_works_in_headless_chromium(report, artifacts):
    from playwright.sync_api import sync_playwright

    path, info = report
    ev, top = info["ev"], info["top"]
    with sync_playwright() as p:
        browser, page, errors = _open(p, {"width": 1280, "height": 900})
        try:
            page.goto(path.as_uri())
            page.wait_for_selector('#merchants[data-ready="true"]')
            page.screenshot(path=str(artifacts / "first-screen-1280.png"))

            # the decision and the contracts' judgements are on the first screen
            for sel in ("#verdict", "#judgements"):
                box = page.locator(sel).bounding_box()
                assert box is not None and box["y"] + min(box["height"], 60) <= 900, sel
            assert page.locator("#verdict").inner_text().startswith("IN PROGRESS: contracts passed")
            assert page.locator("#judgements").inner_text().count("\n") >= 2

            # every merchant, 100 to a page, largest first
            n = len(top)
            assert len(info["data"]["rows"]) == n
            shown = _column(page, 1)
            assert shown == top[:min(n, 100)]
            assert page.locator("#merchant-count").inner_text().startswith(f"{n:,} of {n:,} merchants")

            # sort by transactions: descending first (as written), a second click ascending
            support = ev.suggestions.set_index("merchant_id")["support"]
            page.locator('#merchants th[data-key="support"]').click()
            asc = [int(x.replace(",", "")) for x in _column(page, 3)]
            assert asc == sorted(asc) and asc[0] == support.min()
            assert page.locator('#merchants th[data-key="support"]').get_attribute("aria-sort") == "ascending"
            # a text column sorts A to Z on its first click
            page.locator('#merchants th[data-key="merchant_id"]').click()
            ids = _column(page, 1)
            assert ids == sorted(top)[:len(ids)]

            # search narrows to one merchant; the count says so
            page.locator("#merchant-filter").fill(top[2])
            assert _column(page, 1) == [top[2]]
            assert page.locator("#merchant-count").inner_text().startswith(f"1 of {n:,}")
            page.locator("#merchant-filter").fill("")

            # a segment, then the edited merchant only (who edited it is shown)
            seg = str(ev.suggestions.set_index("merchant_id").loc[top[1], "segment"])
            page.locator("#merchant-segment").select_option(seg)
            segs = set(_column(page, 2))
            assert segs == {seg}
            expected = int((ev.suggestions["segment"] == seg).sum())
            assert page.locator("#merchant-count").inner_text().startswith(f"{expected:,} of {n:,}")
            page.locator("#merchant-edited").check()
            rows = page.eval_on_selector_all("#merchants tbody tr", "trs => trs.map(t => t.innerText)")
            assert len(rows) == 1 and top[1] in rows[0] and "dana" in rows[0] and "0.5000" in rows[0]
            page.locator("#threshold-suggestions").scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts / "merchant-table-filtered.png"))
            page.screenshot(path=str(artifacts / "whole-report-1280.png"), full_page=True)
            # printed: the table's controls are not printed, the decision is
            page.emulate_media(media="print")
            assert not page.locator("#merchant-controls").is_visible() and page.locator("#verdict").is_visible()
            page.pdf(path=str(artifacts / "report.pdf"))
            assert (artifacts / "report.pdf").stat().st_size > 10_000
            assert errors == []
        finally:
            browser.close()

        # on a phone: the decision is the first thing seen, and the page still runs its script
        browser, page, errors = _open(p, {"width": 390, "height": 844})
        try:
            page.goto(path.as_uri())
            page.wait_for_selector('#merchants[data-ready="true"]')
            box = page.locator("#verdict").bounding_box()
            assert box is not None and box["y"] < 844 and box["width"] <= 390
            page.screenshot(path=str(artifacts / "first-screen-phone.png"))
            assert errors == []
        finally:
            browser.close()
