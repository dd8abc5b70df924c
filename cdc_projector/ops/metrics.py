"""Prometheus exposition of the telemetry (``GET /metrics``).

A custom collector reads :class:`~cdc_projector.ops.telemetry.Telemetry` at scrape
time (nothing is observed twice on the hot path). Every series has a
``projection`` label:

==========================================  ==========  =============================================
name                                        type        meaning
==========================================  ==========  =============================================
``cdc_projector_lag_seconds``               histogram   commit-to-view lag per change event
``cdc_projector_lag_quantile_seconds``      gauge       p50/p95/p99 over ``window`` = 1m / 15m
``cdc_projector_events_total``              counter     change events applied (heartbeats included)
``cdc_projector_batches_total``             counter     batches applied
``cdc_projector_sink_errors_total``         counter     failed sink attempts (retried)
``cdc_projector_backlog``                   gauge       Kafka messages / WAL bytes behind (``unit``)
``cdc_projector_dead_letters``              gauge       dead letters recorded
``cdc_projector_applied_lsn``               gauge       highest applied source LSN
``cdc_projector_applied_commit_timestamp``  gauge       commit time of the applied watermark (epoch s)
``cdc_projector_state``                     gauge       1 for the current ``state``, 0 for the others
``cdc_projector_paused``                    gauge       1 while paused by an operator
``cdc_projector_resyncs_total``             counter     catch-ups by re-snapshot started (``runtime.resync_backlog_mb``)
``cdc_projector_slo_breach``                gauge       1 while an SLO of the projection is breached
``cdc_projector_compactions_total``         counter     compaction rounds run (``runtime.compact_every_s``)
``cdc_projector_tombstones_dropped_total``  counter     tombstones dropped by them (views and mirror)
``cdc_projector_compaction_seconds_total``  counter     time the projection waited on them
==========================================  ==========  =============================================
"""
from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    Metric)
from prometheus_client.registry import Collector

from .telemetry import RESYNC, STATES, Telemetry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class TelemetryCollector(Collector):
    """Turns a :class:`Telemetry` into Prometheus metric families."""

    def __init__(self, telemetry: Telemetry, backlog_unit: str = "") -> None:
        self.telemetry = telemetry
        self.backlog_unit = backlog_unit or ("bytes" if telemetry.source == "postgres" else "messages")

    def collect(self) -> Iterator[Metric]:
        label = ["projection"]
        lag = HistogramMetricFamily("cdc_projector_lag_seconds",
                                    "Commit-to-view lag of applied change events.", labels=label)
        quant = GaugeMetricFamily("cdc_projector_lag_quantile_seconds",
                                  "Commit-to-view lag quantile over a sliding window.",
                                  labels=["projection", "quantile", "window"])
        events = CounterMetricFamily("cdc_projector_events", "Change events applied.", labels=label)
        batches = CounterMetricFamily("cdc_projector_batches", "Batches applied.", labels=label)
        errors = CounterMetricFamily("cdc_projector_sink_errors", "Failed sink attempts (retried).", labels=label)
        backlog = GaugeMetricFamily("cdc_projector_backlog", "How far the source is ahead of the projection.",
                                    labels=["projection", "unit"])
        letters = GaugeMetricFamily("cdc_projector_dead_letters", "Dead letters recorded.", labels=label)
        lsn = GaugeMetricFamily("cdc_projector_applied_lsn", "Highest applied source LSN.", labels=label)
        commit = GaugeMetricFamily("cdc_projector_applied_commit_timestamp",
                                   "Commit time of the applied watermark (seconds since the epoch).", labels=label)
        state = GaugeMetricFamily("cdc_projector_state", "1 for the projection's current state.",
                                  labels=["projection", "state"])
        paused = GaugeMetricFamily("cdc_projector_paused", "1 while the projection is paused by an operator.",
                                   labels=label)
        resyncs = CounterMetricFamily("cdc_projector_resyncs", "Catch-ups by re-snapshot started.", labels=label)
        breach = GaugeMetricFamily("cdc_projector_slo_breach", "1 while an SLO is breached.", labels=label)
        rounds = CounterMetricFamily("cdc_projector_compactions", "Compaction rounds run.", labels=label)
        dropped = CounterMetricFamily("cdc_projector_tombstones_dropped",
                                      "Tombstones dropped by compaction (views and mirror).", labels=label)
        waited = CounterMetricFamily("cdc_projector_compaction_seconds",
                                     "Time the projection waited on compaction.", labels=label)
        for name, proj in sorted(self.telemetry.projections.items()):
            st = proj.status()
            buckets, total, count = proj.prometheus_histogram()
            lag.add_metric([name], [("+Inf" if b == float("inf") else repr(b), c) for b, c in buckets], total)
            for window, figures in st["lag"].items():
                for q in ("p50", "p95", "p99"):
                    if figures.get(q) is not None:
                        quant.add_metric([name, f"0.{q[1:]}", window], figures[q])
            events.add_metric([name], st["events_total"])
            batches.add_metric([name], st["batches"])
            errors.add_metric([name], st["errors_total"])
            if st["backlog"]["total"] is not None:
                backlog.add_metric([name, self.backlog_unit], st["backlog"]["total"])
            letters.add_metric([name], st["dead_letters"])
            if proj.applied_lsn is not None:
                lsn.add_metric([name], float(proj.applied_lsn))
            if st["applied"]["commit_time"]:
                commit.add_metric([name], st["applied"]["commit_time"])
            for s in STATES:
                state.add_metric([name, s], 1.0 if st["state"] == s else 0.0)
            paused.add_metric([name], 1.0 if st["paused"] and st["paused_by"] != RESYNC else 0.0)
            resyncs.add_metric([name], st["resyncs"])
            breach.add_metric([name], 1.0 if st["breaches"] else 0.0)
            rounds.add_metric([name], proj.compactions_total)
            dropped.add_metric([name], proj.tombstones_dropped_total)
            waited.add_metric([name], proj.compaction_seconds_total)
            del count
        yield from (lag, quant, events, batches, errors, backlog, letters, lsn, commit, state, paused, resyncs,
                    breach, rounds, dropped, waited)


def make_registry(telemetry: Telemetry) -> CollectorRegistry:
    """A registry of its own (not the global one) exposing ``telemetry``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TelemetryCollector(telemetry))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format."""
    return generate_latest(registry)
