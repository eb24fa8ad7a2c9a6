"""Benchmark: the release report with 10,000 merchants, its size and its time to interactive in headless Chromium.

Takes a release that ran (default: the demo's, ``var/demo``, made by `make demo`), copies its home to a
temporary folder, and replaces the release's threshold suggestions with ``--merchants`` rows drawn from its
own (resampled with replacement, new merchant ids, every figure kept, each reason made unique: the worst case
for the page's size): the merchant table is what
grows with merchants, the rest of the report does not. Then renders the report (analysis.report.render_report)
and opens it in the system's Chromium (Playwright), offline, at 1280 x 900:

- size: bytes of the file (target: under 5 MB);
- render: seconds to render the HTML in Python;
- time to interactive: from navigation to the merchant table's script having drawn its first page
  (``data-ready``), median of ``--repeat`` loads; and in the page, one sort by a number column and one
  search, each timed with performance.now().

Baseline, in the same run and browser: the same release with its own merchants (the demo's 1,616), so the
ratio says what 10,000 merchants cost on this machine, whatever its load.

    .venv/bin/python benchmarks/bench_report.py [--home var/demo] [--merchants 10000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _grow(sugg: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = sugg.iloc[rng.integers(0, len(sugg), n)].reset_index(drop=True)
    out["merchant_id"] = [f"B{i:06d}" for i in range(n)]
    # every reason its own (a real log's merchants each have their own counts in it): the page cannot send a
    # repeated reason once, the worst case for its size
    out["reason"] = out["reason"] + " [" + out["merchant_id"] + "]"
    return out


def _render(home: Path, release_id: str, target: Path) -> tuple[int, float]:
    from analysis.report import render_report

    t = time.perf_counter()
    html = render_report(release_id, home / "releases" / release_id)
    seconds = time.perf_counter() - t
    target.write_text(html)
    return len(html.encode()), seconds


def _browse(page, path: Path, repeat: int) -> dict:
    loads = []
    for _ in range(repeat):
        t = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_selector('#merchants[data-ready="true"]')
        loads.append(time.perf_counter() - t)
    sort_ms = page.evaluate("""() => { const th = document.querySelector('#merchants th[data-key="block_after"]');
        const t = performance.now(); th.click(); return performance.now() - t; }""")
    search_ms = page.evaluate("""() => { const s = document.getElementById('merchant-filter'); s.value = 'thin';
        const t = performance.now(); s.dispatchEvent(new Event('input')); return performance.now() - t; }""")
    rows = page.evaluate("() => document.getElementById('merchant-count').textContent")
    return {"time_to_interactive_s": statistics.median(loads), "loads_s": [round(x, 3) for x in loads],
            "sort_ms": sort_ms, "search_ms": search_ms, "after_search": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, default=Path("var/demo"), help="a fraud-cd home with a reported release")
    ap.add_argument("--release", default=None, help="release id (default: the newest with a release folder)")
    ap.add_argument("--merchants", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chromium", default=os.environ.get("FRAUDCD_CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()
    if not (args.home / "releases").is_dir():
        print(f"No releases under {args.home}: run `make demo` first, or pass --home.", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="fraudcd-bench-report-"))
    home = tmp / "home"
    shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("decision_log", "events", "logs", "airflow"))
    os.environ["FRAUDCD_HOME"] = str(home)
    rid = args.release or sorted(p.name for p in (home / "releases").iterdir())[-1]
    folder = home / "releases" / rid
    own = pd.read_parquet(folder / "suggestions.parquet")
    out = {"release": rid, "merchants": args.merchants, "baseline_merchants": len(own)}
    base_size, base_render = _render(home, rid, tmp / "baseline.html")
    _grow(own, args.merchants).to_parquet(folder / "suggestions.parquet")
    size, render = _render(home, rid, tmp / "grown.html")
    out.update({"size_bytes": size, "size_target_bytes": 5_000_000, "size_met": size < 5_000_000,
                "baseline_size_bytes": base_size, "render_s": round(render, 2), "baseline_render_s": round(base_render, 2)})
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        base = _browse(page, tmp / "baseline.html", args.repeat)
        grown = _browse(page, tmp / "grown.html", args.repeat)
        browser.close()
    out.update({"grown": grown, "baseline": base, "page_errors": errors,
                "tti_ratio": grown["time_to_interactive_s"] / base["time_to_interactive_s"]})
    print(json.dumps(out, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
