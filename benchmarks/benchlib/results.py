"""The figures of one benchmark run, and how runs of the same cell are combined.

A *cell* is one scenario on one server. Its figures over ``--runs`` runs: requests/s, p50, p99
and CPU per request are medians, errors are summed, peak RSS is the highest. Ratios are always
between cells of the same scenario, measured in the same harness run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .loaders import LoadResult

__all__ = ["Cell", "Results", "Run", "Startup", "median"]


def median(values: Sequence[float]) -> float | None:
    """The median, or None when there is nothing to take it of."""
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class Run:
    """One timed run of a cell."""

    load: LoadResult
    #: CPU seconds the server's process tree used during the run.
    server_cpu_s: float
    #: Peak RSS of the server's process tree during the run (bytes; 0 when unknown).
    peak_rss: int

    @property
    def cpu_ms_per_request(self) -> float | None:
        """Server CPU milliseconds per completed request."""
        return 1000 * self.server_cpu_s / self.load.requests if self.load.requests else None


@dataclass
class Cell:
    """One scenario on one server: its runs, or why it did not run."""

    scenario: str
    server: str
    runs: list[Run] = field(default_factory=list)
    #: Why there are no runs (skipped, or the answer check failed).
    skipped: str | None = None

    @property
    def rps(self) -> float | None:
        """Median requests/s."""
        return median([run.load.rps for run in self.runs])

    @property
    def p50_ms(self) -> float | None:
        """Median of the runs' median latencies."""
        return median([run.load.p50_us / 1000 for run in self.runs])

    @property
    def p99_ms(self) -> float | None:
        """Median of the runs' 99th-percentile latencies."""
        return median([run.load.p99_us / 1000 for run in self.runs])

    @property
    def errors(self) -> int:
        """Every failed or wrong request, over all runs."""
        return sum(run.load.errors for run in self.runs)

    @property
    def requests(self) -> int:
        """Completed requests over all runs."""
        return sum(run.load.requests for run in self.runs)

    @property
    def cpu_ms_per_request(self) -> float | None:
        """Median server CPU ms per request."""
        values = [run.cpu_ms_per_request for run in self.runs]
        return median([value for value in values if value is not None])

    @property
    def peak_rss(self) -> int | None:
        """Highest peak RSS over the runs (bytes)."""
        peaks = [run.peak_rss for run in self.runs if run.peak_rss]
        return max(peaks) if peaks else None


@dataclass
class Startup:
    """How a server started: time to ready, memory once idle, which models it has."""

    server: str
    label: str
    role: str
    ready_s: float | None = None
    #: RSS of its process tree, idle, after every model answered once (bytes).
    idle_rss: int | None = None
    models: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None
    #: The key of the floor row (the model libraries alone) its *over floor* figures subtract.
    floor: str | None = None


@dataclass
class Results:
    """Everything one harness run produced."""

    command: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    #: Server key -> its start-up figures, in the order servers were started.
    startups: dict[str, Startup] = field(default_factory=dict)
    #: (scenario key, server key) -> cell, in scenario order.
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    #: Scenario key -> its human label.
    scenario_labels: dict[str, str] = field(default_factory=dict)
    #: Scenario key -> the scenario whose MLServer figure its *vs MLServer* ratio divides by
    #: when MLServer did not run it (the binary extension: MLServer's JSON row).
    mlserver_fallback: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Add a note once."""
        if text not in self.notes:
            self.notes.append(text)

    def cell(self, scenario: str, server: str) -> Cell:
        """The cell, created on first use."""
        return self.cells.setdefault((scenario, server), Cell(scenario, server))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (medians and every run's raw figures)."""
        cells = []
        for cell in self.cells.values():
            cells.append(
                {
                    "scenario": cell.scenario,
                    "server": cell.server,
                    "skipped": cell.skipped,
                    "rps": cell.rps,
                    "p50_ms": cell.p50_ms,
                    "p99_ms": cell.p99_ms,
                    "errors": cell.errors,
                    "cpu_ms_per_request": cell.cpu_ms_per_request,
                    "peak_rss": cell.peak_rss,
                    "runs": [
                        {
                            **vars(run.load),
                            "server_cpu_s": run.server_cpu_s,
                            "peak_rss": run.peak_rss,
                        }
                        for run in cell.runs
                    ],
                }
            )
        return {
            "command": self.command,
            "machine": self.machine,
            "settings": self.settings,
            "startups": [vars(startup) for startup in self.startups.values()],
            "scenarios": self.scenario_labels,
            "mlserver_fallback": self.mlserver_fallback,
            "cells": cells,
            "notes": self.notes,
        }
