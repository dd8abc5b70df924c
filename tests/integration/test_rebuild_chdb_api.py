"""Embedded chDB while `run` holds its lock: `rebuild` and `verify` from the CLI go through
the running process's ops API and run inside it (real `run` process, chDB in a temp dir)."""
from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path

import pytest

from cdc_projector.errors import ProcessNotRunning
from cdc_projector.ops.client import OpsClient
from cdc_projector.sample.seed import seed
from tests.integration.test_rebuild_helpers import chdb_sinks, cli, free_port, start_cli, write_config
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def test_cli_rebuild_and_verify_run_inside_the_process_holding_chdb(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=30, products=15, orders=300, seed=4)
    env = {"CDC_PROJECTOR_STATE_DIR": str(tmp_path / "state")}
    port = free_port()
    cfg = write_config(tmp_path / "p.yaml", pgdb, f"t_rbapi_{uuid.uuid4().hex[:8]}", ["orders_flat"],
                       chdb_sinks(tmp_path), port)
    run = start_cli("run", "-c", str(cfg), "--projection", "orders_flat", env=env)
    try:
        deadline = time.monotonic() + 240
        client = OpsClient(f"http://127.0.0.1:{port}")
        while True:                       # `run` holds chDB once its ops API answers
            assert run.poll() is None, run.stderr.read() if run.stderr else "run exited"
            try:
                client.status()
                break
            except ProcessNotRunning:
                assert time.monotonic() < deadline, "run's ops API never answered"
                time.sleep(0.5)
        while True:                       # the live view exists and matches the source
            assert run.poll() is None, run.stderr.read() if run.stderr else "run exited"
            ok = cli("verify", "orders_flat", "-c", str(cfg), "--rounds", "1", env=env)
            if ok.returncode == 0:
                break
            assert time.monotonic() < deadline, ok.stdout + ok.stderr
            time.sleep(2)
        assert "0 missing, 0 extra, 0 different" in ok.stdout, ok.stdout

        done = cli("rebuild", "orders_flat", "-c", str(cfg), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "inside the `run` process" in done.stderr, done.stderr
        digest = re.findall(r"checksum (sha256:[0-9a-f]{64})", done.stdout)
        assert digest, done.stdout

        again = cli("verify", "orders_flat", "-c", str(cfg), "--rounds", "1", env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"actual   {digest[0]}" in again.stdout, (digest, again.stdout)
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
