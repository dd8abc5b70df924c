"""Issue 7 acceptance: the dashboard of a live `cdc-projector run` shows every projection
with its state and lag figures, draws the lag and throughput charts, and updates itself
while the sample workload writes. Uses Debian's chromium (never `playwright install`);
saves a screenshot to artifacts/dashboard.png."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_ops_harness import ROOT, Projector, eventually, free_port, write_config
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.services import MONGODB_URL, scratch_mongo_database

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NAMES = ("customer_profile", "order_document")


@pytest.fixture
def mongo_db() -> Iterator[str]:
    with scratch_mongo_database("t_dash") as name:
        yield name


def test_dashboard_shows_live_projections(pgdb: PgDb, mongo_db: str, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium missing: `apt-get install -y chromium` (make setup)"
    seed(pgdb.dsn, customers=20, products=10, orders=40, seed=5)
    port = free_port()
    config = write_config(tmp_path / "shop.yaml", pgdb, MONGODB_URL, mongo_db, port, NAMES, compact_every_s=2)
    run = Projector(config, tmp_path / "state", port, tmp_path / "run.log").start()
    stop = threading.Event()
    writer = threading.Thread(target=run_workload, args=(pgdb.dsn,),
                              kwargs={"rate": 2.0, "duration": 120, "seed": 9, "stop": stop}, daemon=True)
    writer.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{run.url}/")
                for name in NAMES:
                    page.wait_for_selector(f'tr[data-projection="{name}"]', timeout=30_000)
                    state = page.inner_text(f'tr[data-projection="{name}"] td.state')
                    assert state in ("running", "starting", "stale"), state

                def lag_shown() -> bool:
                    return all(page.inner_text(f'tr[data-projection="{n}"] td.p95') not in ("–", "")
                               for n in NAMES)
                eventually(lag_shown, "lag p95 not shown for every projection", timeout=90, every=1)
                first_updated = page.inner_text("#updated")
                first_events = {n: page.inner_text(f'tr[data-projection="{n}"] td.lsn') for n in NAMES}
                lag_path = page.get_attribute('#chart-lag path[data-projection="order_document"]', "d")
                eps_path = page.get_attribute('#chart-eps path[data-projection="order_document"]', "d")
                assert lag_path and eps_path, "charts have no series"

                def updated() -> bool:
                    return (page.inner_text("#updated") != first_updated
                            and page.get_attribute('#chart-eps path[data-projection="order_document"]', "d")
                            != eps_path
                            and all(page.inner_text(f'tr[data-projection="{n}"] td.lsn') != first_events[n]
                                    for n in NAMES))
                eventually(updated, "the dashboard did not update (time, chart, applied LSN)", timeout=60, every=1)

                def compaction_shown() -> bool:     # the name's tooltip (compaction every 2 s here)
                    title = page.get_attribute('tr[data-projection="order_document"] td:first-child', "title")
                    return "tombstones dropped in" in (title or "")
                eventually(compaction_shown, "compaction rounds not shown", timeout=60, every=1)
                artifacts = ROOT / "artifacts"
                artifacts.mkdir(exist_ok=True)
                page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
            finally:
                browser.close()
    finally:
        stop.set()
        writer.join(timeout=30)
        run.stop()
