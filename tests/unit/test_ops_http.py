"""The ops HTTP API (status, metrics, wait, pause/resume, token) and its client helpers."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cdc_projector.engine.projector import BatchResult
from cdc_projector.errors import OpsError, ProcessNotRunning, WaitTimeout
from cdc_projector.events import ChangeEvent, Op, Position, TableId, parse_lsn
from cdc_projector.ops.client import OpsClient
from cdc_projector.ops.control import PauseStore, state_dir_for
from cdc_projector.ops.http import LocalProvider, OpsServer, create_app, token_for
from cdc_projector.ops.metrics import make_registry
from cdc_projector.ops.telemetry import ProjectionTelemetry, SloSpec, Telemetry
from cdc_projector.ops.wait import wait_for
from cdc_projector.sources.base import Batch


def apply(p: ProjectionTelemetry, lsn: int, lag_s: float = 0.1) -> None:
    import time
    now = time.time()
    ev = ChangeEvent(Op.UPDATE, TableId("public", "t"), {"id": 1}, None, {"id": 1}, Position(lsn, 0),
                     commit_ts_us=int((now - lag_s) * 1e6))
    p.applied(Batch([ev], {"pg:s": lsn}), BatchResult(position=ev.position, commit_ts_us=ev.commit_ts_us),
              written_at=now)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Telemetry, PauseStore]:
    store = PauseStore(tmp_path)
    t = Telemetry(source="postgres")
    for name in ("orders", "customers"):
        p = t.add(ProjectionTelemetry(name, kind="document", sink="docs", target=name,
                                      slo=SloSpec(lag_p95_ms=50), on_pause_change=lambda n, v, by=None: store.set(n, v, by=by)))
        p.opened(None)
    return t, store


def client(t: Telemetry, store: PauseStore, token: str | None = None) -> TestClient:
    return TestClient(create_app(LocalProvider(t, make_registry(t), store), token))


def test_status_and_dashboard_page(setup: tuple[Telemetry, PauseStore]) -> None:
    t, store = setup
    apply(t.projections["orders"], 1000, lag_s=0.2)
    c = client(t, store)
    doc = c.get("/api/status?history=1").json()
    orders = next(p for p in doc["projections"] if p["name"] == "orders")
    assert orders["events_total"] == 1 and orders["lag"]["1m"]["p95"] >= 0.2
    assert orders["breaches"] and orders["history"]
    page = c.get("/")
    assert page.status_code == 200 and "api/status" in page.text and "<svg" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "")   # nothing fetched from elsewhere


def test_metrics_exposition(setup: tuple[Telemetry, PauseStore]) -> None:
    t, store = setup
    apply(t.projections["orders"], 1000, lag_s=0.2)
    text = client(t, store).get("/metrics").text
    assert 'cdc_projector_lag_seconds_bucket{le="0.25",projection="orders"} 1.0' in text
    assert 'cdc_projector_lag_seconds_bucket{le="0.1",projection="orders"} 0.0' in text
    assert 'cdc_projector_events_total{projection="orders"} 1.0' in text
    assert 'cdc_projector_state{projection="orders",state="running"} 1.0' in text
    assert 'cdc_projector_slo_breach{projection="orders"} 1.0' in text
    assert 'cdc_projector_dead_letters{projection="customers"} 0.0' in text
    assert 'cdc_projector_resyncs_total{projection="orders"} 0.0' in text
    t.projections["orders"].set_paused(True, by="resync")      # a catch-up by re-snapshot holds it
    t.projections["orders"].resyncs += 1
    text = client(t, store).get("/metrics").text
    assert 'cdc_projector_resyncs_total{projection="orders"} 1.0' in text
    assert 'cdc_projector_paused{projection="orders"} 0.0' in text          # not an operator's pause
    assert 'cdc_projector_state{projection="orders",state="rebuilding"} 1.0' in text


def test_wait_endpoint(setup: tuple[Telemetry, PauseStore]) -> None:
    t, store = setup
    c = client(t, store)
    r = c.get("/api/wait", params={"lsn": "0/500", "projection": "orders", "timeout": "0.1"})
    assert r.status_code == 408 and "did not apply 0/500" in r.json()["error"]
    threading.Timer(0.1, lambda: apply(t.projections["orders"], parse_lsn("0/600"))).start()
    r = c.get("/api/wait", params={"lsn": "0/500", "projection": "orders", "timeout": "10"})
    assert r.status_code == 200 and r.json()["applied"] == {"orders": "0/600"}
    assert c.get("/api/wait", params={"lsn": "zz"}).status_code == 400
    assert c.get("/api/wait", params={"lsn": "0/1", "projection": "nope"}).status_code == 404


def test_pause_resume_persisted(setup: tuple[Telemetry, PauseStore]) -> None:
    t, store = setup
    c = client(t, store)
    assert c.post("/api/projections/orders/pause").json()["paused"] is True
    assert t.projections["orders"].paused and store.is_paused("orders")
    assert PauseStore(store.path.parent).load().keys() == {"orders"}     # on disk
    assert c.post("/api/projections/orders/resume").json()["paused"] is False
    assert not store.is_paused("orders")
    assert c.post("/api/projections/nope/pause").status_code == 404


def test_token_required_on_every_request(setup: tuple[Telemetry, PauseStore]) -> None:
    t, store = setup
    c = client(t, store, token="s3cret")
    assert c.get("/api/status").status_code == 401
    assert c.get("/metrics").status_code == 401
    assert c.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/?token=s3cret").status_code == 200


def test_non_loopback_bind_needs_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDC_PROJECTOR_TOKEN", raising=False)
    assert token_for("127.0.0.1") is None
    with pytest.raises(OpsError, match="without a token"):
        token_for("0.0.0.0")
    monkeypatch.setenv("CDC_PROJECTOR_TOKEN", "t0k")
    assert token_for("0.0.0.0") == "t0k"


def test_real_server_client_and_wait_for(setup: tuple[Telemetry, PauseStore]) -> None:
    t, store = setup
    server = OpsServer(create_app(LocalProvider(t, make_registry(t), store)), "127.0.0.1", 0).start()
    try:
        url = server.url
        assert OpsClient(url).status()["process"]["source"] == "postgres"
        with pytest.raises(WaitTimeout, match="did not apply"):
            wait_for("0/900", url=url, projections=["orders"], timeout=0.2)
        apply(t.projections["orders"], parse_lsn("0/900"))
        apply(t.projections["customers"], parse_lsn("0/901"))
        assert wait_for("0/900", url=url, timeout=5)["ok"] is True
        with pytest.raises(OpsError, match="port"):
            OpsServer(create_app(LocalProvider(t, make_registry(t))), "127.0.0.1", server.port).start()
    finally:
        server.stop()
    with pytest.raises(ProcessNotRunning, match="no cdc-projector process"):
        OpsClient(url, timeout_s=1).status()


def test_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDC_PROJECTOR_STATE_DIR", raising=False)
    f = tmp_path / "shop.yaml"
    f.write_text("version: 1\n")
    assert state_dir_for(f) == tmp_path / ".cdc-projector"
    assert state_dir_for(tmp_path) == tmp_path / ".cdc-projector"
    monkeypatch.setenv("CDC_PROJECTOR_STATE_DIR", str(tmp_path / "x"))
    assert state_dir_for(f) == tmp_path / "x"


def test_rebuild_progress_reported_by_a_rebuild_process(setup: tuple[Telemetry, PauseStore]) -> None:
    """`cdc-projector rebuild` in another process posts its progress; status and state show it."""
    t, store = setup
    c = client(t, store)
    r = c.post("/api/projections/orders/rebuild-progress",
               params={"phase": "snapshot", "done": 4000, "total": 10000, "rate": 2000.0, "eta_s": 3.0})
    assert r.status_code == 200
    orders = next(p for p in c.get("/api/status").json()["projections"] if p["name"] == "orders")
    assert orders["state"] == "rebuilding"
    assert orders["rebuild"] == {"phase": "snapshot", "done": 4000, "total": 10000, "rate": 2000.0, "eta_s": 3.0}
    assert c.post("/api/projections/orders/rebuild-progress", params={"done": "x"}).status_code == 400
    assert c.post("/api/projections/nope/rebuild-progress", params={"done": 1}).status_code == 404
    assert c.post("/api/projections/orders/rebuild-progress", params={"finished": 1}).status_code == 200
    orders = next(p for p in c.get("/api/status").json()["projections"] if p["name"] == "orders")
    assert orders["rebuild"] is None and orders["state"] != "rebuilding"
