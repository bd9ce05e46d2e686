"""`python -m scripts.demo.screenshot`: the README's picture of the dashboard (docs/dashboard.png), taken from a
running dashboard, and with `--car-out FILE` a car's page too.

Take it during the live phase of a real `make demo` with its default model: run the demo in one terminal and this
in another once the demo says "3/4 live" (its dashboard's URL is in its output; 8050 unless that port was taken).
It opens the page in Debian's chromium through Playwright (the browser test's way: `CHROMIUM` names another one),
waits until the page is live, shows the serving model's verdict and at least `--alerts` alerts, then saves the
fleet page; with `--car-out`, it then opens the page of the car of the newest alert that a failure followed (else
the newest alert) and saves that.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from common.defaults import DASHBOARD_PORT, LOCALHOST
from scripts.runtime.local import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1400, "height": 900}
WAIT_MS = 600_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo.screenshot", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=f"http://{LOCALHOST}:{DASHBOARD_PORT}/", help="the dashboard (%(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png", help="the fleet page's picture")
    parser.add_argument("--car-out", type=Path, help="also a car's page, to this file")
    parser.add_argument("--alerts", type=int, default=5, help="alerts the page shows before the picture (5)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright  # a dev dependency (pyproject.toml): only this command needs it

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(args.url)
            page.wait_for_selector("#connection:has-text('live')", timeout=WAIT_MS)
            page.wait_for_function(
                f"""() => document.querySelectorAll('#model-verdict li').length > 0
                    && document.querySelectorAll('#alerts tbody tr').length >= {args.alerts}""",
                timeout=WAIT_MS,
            )
            page.wait_for_timeout(3000)  # a few more updates: the chart and the rates settle
            page.screenshot(path=str(args.out), full_page=True)
            print(f"the fleet page: {args.out}")
            if args.car_out is None:
                return 0
            rows = page.eval_on_selector_all(
                "#alerts tbody tr", "rows => rows.map(r => [r.dataset.carId, r.dataset.outcome])"
            )
            car = next((c for c, outcome in rows if outcome == "failure-followed"), rows[0][0])
            page.click(f'#alerts tbody tr[data-car-id="{car}"] a.car-link')
            page.wait_for_selector('#car-page[data-found="true"]', timeout=WAIT_MS)
            page.wait_for_timeout(2500)
            page.screenshot(path=str(args.car_out), full_page=True)
            print(f"the page of {car}: {args.car_out}")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
