"""Rendering results: the markdown tables (with ratios) and the PNG chart."""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .repositories import FIXED_COST_S, MAX_BATCH_SIZE, MAX_BATCH_TIME_S, PER_ROW_COST_S
from .results import Cell, Results, Startup
from .scenarios import BATCH_PAIRS, TRANSPORT_NAMES, BatchPair

__all__ = ["batching_table", "header", "markdown", "write_chart"]

#: Issue #13's targets for adaptive batching, checked on REST: requests/s at c=32 with batching
#: on over off, and over MLServer's with batching on; p99 at c=1 with batching on at most
#: max_batch_time plus the model's time for one row.
BATCH_ON_OFF_TARGET = 3.0
BATCH_VS_MLSERVER_TARGET = 1.5
BATCH_P99_BOUND_MS = 1000 * (MAX_BATCH_TIME_S + FIXED_COST_S + PER_ROW_COST_S)

_MB = 1024 * 1024
_COLOURS = {
    "subject": "#1f77b4",
    "baseline": "#ff7f0e",
    "ceiling": "#7f7f7f",
    "reference": "#2ca02c",
    "floor": "#c7c7c7",
}


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}"


def _mb(value: int | None) -> str:
    return "-" if not value else f"{value / _MB:,.0f}"


#: Marks a *vs MLServer* ratio taken against another scenario's MLServer figure.
FALLBACK_MARK = "\u2020"


def _ratio(value: float | None, base: float | None, mark: str = "") -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x{mark}"


def _base(results: Results, scenario: str, server: str | None) -> float | None:
    if server is None:
        return None
    cell = results.cells.get((scenario, server))
    return cell.rps if cell is not None else None


def _mlserver_base(
    results: Results, scenario: str, mlserver: str | None
) -> tuple[float | None, str | None]:
    """MLServer's requests/s for ``scenario``, and the other scenario it came from if any.

    When MLServer did not run ``scenario`` (the binary extension), the figure is its figure in
    the scenario's fallback (the same tensor as JSON), as the targets compare them.
    """
    rps = _base(results, scenario, mlserver)
    if rps:
        return rps, None
    other = results.mlserver_fallback.get(scenario)
    if other is not None:
        rps = _base(results, other, mlserver)
        if rps:
            return rps, other
    return None, None


def _ceiling(results: Results, scenario: str, ceilings: Sequence[str]) -> float | None:
    """The requests/s of the first of ``ceilings`` that ran ``scenario``."""
    for server in ceilings:
        rps = _base(results, scenario, server)
        if rps:
            return rps
    return None


def _possessive(servers: Sequence[str]) -> str:
    return " or ".join(f"{name}'s" for name in servers)


def header(results: Results) -> str:
    """What the figures were measured on and how: machine, versions, loader, command."""
    m = results.machine
    s = results.settings
    versions = ", ".join(f"{name} {v}" for name, v in m["packages"].items() if v != "-")
    mlserver = f"; MLServer {m['mlserver']} (own venv)" if "mlserver" in m else ""
    loaders = ", ".join(
        f"{TRANSPORT_NAMES.get(t, t)}: {name}" for t, name in s.get("loader", {}).items()
    )
    lines = []
    if s["quick"]:
        lines += [
            "**Smoke run (`--quick`): 2 s per scenario, one run, on a shared machine. These",
            "figures show that the harness works; they are noisy and are not measurements.**",
            "",
        ]
    now = datetime.datetime.now(datetime.timezone.utc)
    lines += [
        f"- Date: {now:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['kernel']}; "
        f"load average at start {' '.join(map(str, m['loadavg_at_start']))}",
        f"- Python {m['python']}; {versions}{mlserver}",
        f"- Load: {loaders}; {s.get('pinning', 'no CPU pinning')}",
        f"- {s['runs']} run(s) of {s['duration_s']} s per cell (median), {s['warmup_s']} s warm-up",
        f"- Command: `{results.command}`",
    ]
    return "\n".join(lines)


def markdown(
    results: Results,
    mlserver: str | None,
    ceilings: Sequence[str],
    own_ceilings: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The results as markdown: throughput table, adaptive batching table (when its scenarios
    ran), start-up table and notes.

    *vs bare* divides by the first of ``ceilings`` that ran the scenario (one per transport),
    or, for a server in ``own_ceilings``, by the first of its own (uvicorn's, for the servers
    on uvicorn).
    """
    own = dict(own_ceilings or {})
    bases = [f"{mlserver}'s"] if mlserver else []
    bare = _possessive(ceilings)
    ran = {server for _, server in results.cells}
    by_ceiling: dict[tuple[str, ...], list[str]] = {}
    for server, theirs in own.items():
        if server in ran:
            by_ceiling.setdefault(tuple(theirs), []).append(server)
    exceptions = "; ".join(
        f"{', '.join(servers)}: {_possessive(theirs)}" for theirs, servers in by_ceiling.items()
    )
    if exceptions:
        bare = f"{bare} ({exceptions})" if bare else exceptions
    if bare:
        bases.append(bare)
    lines = [
        "Requests/s, latency and server CPU are medians over the runs; errors are summed"
        " (failed / completed requests); ratios divide requests/s by "
        + (" and by ".join(bases) if bases else "nothing (no baseline ran)")
        + " in the same scenario.",
        "",
        "| Scenario | Server | req/s | vs MLServer | vs bare | p50 ms | p99 ms | errors "
        "| server CPU ms/req | peak RSS MB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    previous = None
    fallbacks: dict[str, str] = {}
    for (scenario, server), cell in results.cells.items():
        shown = results.scenario_labels[scenario] if scenario != previous else ""
        previous = scenario
        theirs = own.get(server, ceilings)
        lines.append(_cell_row(results, cell, shown, server, mlserver, theirs))
        if cell.skipped is None:
            other = _mlserver_base(results, scenario, mlserver)[1]
            if other is not None:
                fallbacks[scenario] = other
    for scenario, other in fallbacks.items():
        skipped = results.cells.get((scenario, mlserver or ""))
        why = f" ({skipped.skipped})" if skipped is not None and skipped.skipped else ""
        lines += [
            "",
            f"{FALLBACK_MARK} {results.scenario_labels[scenario]}: *vs MLServer* divides by"
            f" {mlserver}'s requests/s in {results.scenario_labels.get(other, other)}; {mlserver}"
            f" did not run this scenario{why}.",
        ]
    lines += batching_table(results, mlserver)
    lines += ["", *_startup_table(results, mlserver)]
    if results.notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in results.notes)]
    return "\n".join(lines) + "\n"


def _cell_row(
    results: Results,
    cell: Cell,
    scenario: str,
    server: str,
    mlserver: str | None,
    ceilings: Sequence[str],
) -> str:
    if cell.skipped is not None:
        return f"| {scenario} | {server} | {cell.skipped} | | | | | | | |"
    ml, other = _mlserver_base(results, cell.scenario, mlserver)
    ceiling = _ceiling(results, cell.scenario, ceilings)
    cells = [
        scenario,
        server,
        _rate(cell.rps),
        _ratio(cell.rps, ml, FALLBACK_MARK if other else ""),
        _ratio(cell.rps, ceiling),
        _ms(cell.p50_ms),
        _ms(cell.p99_ms),
        f"{cell.errors} / {cell.requests:,}",
        _ms(cell.cpu_ms_per_request),
        _mb(cell.peak_rss),
    ]
    return "| " + " | ".join(cells) + " |"


def _figure(results: Results, scenario: str | None, server: str, what: str) -> float | None:
    """``what`` ("rps", "p50_ms", "p99_ms") of a cell that ran, else None."""
    cell = results.cells.get((scenario or "", server))
    if cell is None or cell.skipped is not None:
        return None
    value: float | None = getattr(cell, what)
    return value


def _batch_servers(results: Results, pair: BatchPair) -> list[str]:
    keys = {pair.on, pair.off, pair.on_c1, pair.off_c1}
    servers: list[str] = []
    for scenario, server in results.cells:
        if scenario in keys and server not in servers:
            servers.append(server)
    return servers


def _ms2(value: float | None) -> str:
    # Two decimals at any size: the c=1 latencies are read against a bound of 15.02 ms.
    return "-" if value is None else f"{value:.2f}"


def _met(value: float | None, target: float, at_least: bool) -> str:
    if value is None:
        return "not measured"
    return "met" if (value >= target if at_least else value <= target) else "NOT met"


def batching_table(results: Results, mlserver: str | None) -> list[str]:
    """The *Adaptive batching* table (with a blank line first), or nothing when no batching
    scenario ran: per transport and server, requests/s at c=32 with batching on and off, their
    ratio, the ratio to MLServer's, and the latency at c=1; then issue #13's targets, checked for
    each subject on REST."""
    rows: list[str] = []
    targets: list[str] = []
    for pair in BATCH_PAIRS:
        transport = TRANSPORT_NAMES.get(pair.transport, pair.transport)
        for server in _batch_servers(results, pair):
            on, off = (_figure(results, key, server, "rps") for key in (pair.on, pair.off))
            base_on = _figure(results, pair.on, mlserver, "rps") if mlserver else None
            base_off = _figure(results, pair.off, mlserver, "rps") if mlserver else None
            latency = [
                _figure(results, key, server, what)
                for key in (pair.on_c1, pair.off_c1)
                for what in ("p50_ms", "p99_ms")
            ]
            cells = [transport, server, _rate(on), _rate(off), _ratio(on, off)]
            cells += [_ratio(on, base_on), _ratio(off, base_off), *map(_ms2, latency)]
            rows.append("| " + " | ".join(cells) + " |")
            role = results.startups[server].role if server in results.startups else ""
            if pair.transport == "rest" and role == "subject":
                targets.append(_batch_targets(server, on, off, base_on, latency[1]))
            transport = ""
    if not rows:
        return []
    vs = f"{mlserver}'s" if mlserver else "MLServer's (none ran)"
    lines = [
        "",
        "Adaptive batching: one row per request to a model that busy-waits"
        f" {FIXED_COST_S * 1000:g} ms plus {PER_ROW_COST_S * 1e6:g} us per row per call,"
        f" with batching on (`max_batch_size` {MAX_BATCH_SIZE}, `max_batch_time`"
        f" {MAX_BATCH_TIME_S * 1000:g} ms) and off; the same model file and settings on every"
        " server. Requests/s at c=32; *on / off* divides the two; *vs MLServer* divides by"
        f" {vs} with batching the same; latency at c=1 (REST).",
        "",
        "| Transport | Server | on req/s | off req/s | on / off | on vs MLServer"
        " | off vs MLServer | c=1 on p50 ms | c=1 on p99 ms | c=1 off p50 ms | c=1 off p99 ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        *rows,
    ]
    if targets:
        lines += [
            "",
            f"Targets (issue #13, REST): on / off >= {BATCH_ON_OFF_TARGET:g}x, on vs MLServer"
            f" >= {BATCH_VS_MLSERVER_TARGET:g}x, c=1 p99 with batching on <="
            f" {BATCH_P99_BOUND_MS:.2f} ms (`max_batch_time` + the model's time for one row).",
            "",
            *targets,
        ]
    return lines


def _batch_targets(
    server: str, on: float | None, off: float | None, base: float | None, p99: float | None
) -> str:
    on_off = on / off if on is not None and off else None
    vs = on / base if on is not None and base else None
    return (
        f"- {server}: on / off {_ratio(on, off)}"
        f" ({_met(on_off, BATCH_ON_OFF_TARGET, at_least=True)}),"
        f" on vs MLServer {_ratio(on, base)}"
        f" ({_met(vs, BATCH_VS_MLSERVER_TARGET, at_least=True)}),"
        f" c=1 p99 {_ms2(p99)} ms ({_met(p99, BATCH_P99_BOUND_MS, at_least=False)})"
    )


def _over(value: float | None, floor: float | None) -> float | None:
    return value - floor if value is not None and floor is not None else None


def _floor_of(results: Results, startup: Startup | None) -> Startup | None:
    """The floor row ``startup`` is read against, if it was measured."""
    if startup is None or startup.floor is None:
        return None
    floor = results.startups.get(startup.floor)
    return floor if floor is not None and floor.skipped is None else None


def _over_floor(results: Results, startup: Startup | None) -> tuple[float | None, float | None]:
    """Start-to-ready seconds and idle RSS bytes above the server's floor (None: no floor)."""
    floor = _floor_of(results, startup)
    if startup is None or floor is None:
        return None, None
    rss = float(startup.idle_rss) if startup.idle_rss else None
    floor_rss = float(floor.idle_rss) if floor.idle_rss else None
    return _over(startup.ready_s, floor.ready_s), _over(rss, floor_rss)


def _signed(value: float | None, digits: int, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value / scale:+,.{digits}f}"


def _over_ratio(value: float | None, base: float | None) -> str:
    # A base at or below its floor (noise) gives no meaningful ratio.
    if value is None or base is None or base <= 0:
        return "-"
    return f"{value / base:.2f}x"


def _startup_table(results: Results, mlserver: str | None) -> list[str]:
    base = results.startups.get(mlserver) if mlserver else None
    base_ready, base_rss = _over_floor(results, base)
    floors = {s.floor for s in results.startups.values() if s.floor and s.skipped is None}
    lines = [
        "Start-up and idle memory. A *floor* row is the model libraries alone: the same"
        " interpreter imports them and loads the same artefacts, no server (`floor.py`)."
        " *over floor* is a server's figure minus its floor's ("
        + (", ".join(f"`{f}`" for f in sorted(floors)) or "none measured")
        + "), what the server itself adds; its *vs MLServer* divides by "
        + (f"{mlserver}'s over-floor figure." if mlserver else "nothing (no baseline ran)."),
        "",
        "| Server | what it is | start to ready s | vs MLServer | over floor s | vs MLServer "
        "| idle RSS MB | vs MLServer | over floor MB | vs MLServer | models |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for startup in results.startups.values():
        if startup.skipped is not None:
            lines.append(
                f"| {startup.server} | {startup.label} | {startup.skipped} | | | | | | | | |"
            )
            continue
        models = ", ".join(startup.models) or "-"
        if startup.failed:
            models += " (failed: " + ", ".join(sorted(startup.failed)) + ")"
        ready = f"{startup.ready_s:.2f}" if startup.ready_s is not None else "-"
        idle = float(startup.idle_rss) if startup.idle_rss else None
        over_ready, over_rss = _over_floor(results, startup)
        cells = [
            startup.server,
            startup.label,
            ready,
            _ratio(startup.ready_s, base.ready_s if base else None),
            _signed(over_ready, 2),
            _over_ratio(over_ready, base_ready),
            _mb(startup.idle_rss),
            _ratio(idle, float(base.idle_rss) if base and base.idle_rss else None),
            _signed(over_rss, 0, _MB),
            _over_ratio(over_rss, base_rss),
            models,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_chart(results: Results, path: Path, mlserver: str | None, title: str) -> None:
    """A PNG: requests/s per scenario (one panel each), start-up time and idle RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [s for s in results.scenario_labels if _ran(results, s)]
    panels = len(scenarios) + 2
    cols = 2
    rows = math.ceil(panels / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(13, 2.6 * rows + 0.8), squeeze=False)
    flat = list(axes.ravel())
    for axis, scenario in zip(flat, scenarios, strict=False):
        cells = [c for (s, _), c in results.cells.items() if s == scenario and c.rps]
        base, other = _mlserver_base(results, scenario, mlserver)
        mark = FALLBACK_MARK if other else ""
        values = [c.rps or 0.0 for c in cells]
        notes = [f"{_rate(v)}/s" + (f"  {v / base:.2f}x MLS{mark}" if base else "") for v in values]
        _bars(axis, results, [c.server for c in cells], values, notes)
        heading = results.scenario_labels[scenario] + " - requests/s"
        if other is not None:
            heading += (
                f"\n{mark} MLServer's figure from {results.scenario_labels.get(other, other)}"
            )
        axis.set_title(heading, fontsize=9)
    startups = [s for s in results.startups.values() if s.ready_s is not None]
    ready = [s.ready_s or 0.0 for s in startups]
    _bars(
        flat[len(scenarios)],
        results,
        [s.server for s in startups],
        ready,
        [f"{v:.2f} s" for v in ready],
    )
    _floor_lines(flat[len(scenarios)], startups, lambda s: s.ready_s or 0.0)
    flat[len(scenarios)].set_title(
        "start to ready, s (lower is better; dashed: floor, the model libraries alone)",
        fontsize=9,
    )
    idle = [(s.idle_rss or 0) / _MB for s in startups]
    _bars(
        flat[len(scenarios) + 1],
        results,
        [s.server for s in startups],
        idle,
        [f"{v:,.0f} MB" for v in idle],
    )
    _floor_lines(flat[len(scenarios) + 1], startups, lambda s: (s.idle_rss or 0) / _MB)
    flat[len(scenarios) + 1].set_title(
        "idle RSS, MB (lower is better; dashed: floor, the model libraries alone)", fontsize=9
    )
    for axis in flat[panels:]:
        axis.set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.985))  # room for the title above the first row
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _floor_lines(axis: Any, startups: list[Startup], value: Callable[[Startup], float]) -> None:
    """A dashed vertical line at each floor's figure."""
    for startup in startups:
        if startup.role == "floor":
            axis.axvline(value(startup), color="#7f7f7f", linestyle="--", linewidth=0.8)


def _ran(results: Results, scenario: str) -> bool:
    return any(c.rps for (s, _), c in results.cells.items() if s == scenario)


def _bars(
    axis: Any, results: Results, servers: list[str], values: list[float], notes: list[str]
) -> None:
    colours = [_COLOURS.get(results.startups[s].role, "#333333") for s in servers]
    positions = list(range(len(servers)))
    axis.barh(positions, values, color=colours)
    axis.set_yticks(positions, servers, fontsize=8)
    axis.invert_yaxis()
    axis.tick_params(axis="x", labelsize=7)
    top = max(values, default=0.0) or 1.0
    axis.set_xlim(0, top * 1.45)
    for position, value, note in zip(positions, values, notes, strict=True):
        axis.text(value + top * 0.01, position, note, va="center", fontsize=7)
