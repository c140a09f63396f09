"""Combining runs into cells, and the markdown tables with their ratios."""

from __future__ import annotations

import pytest
from benchlib.docs import END, START, replace_section
from benchlib.loaders import LoadResult
from benchlib.report import markdown
from benchlib.results import Cell, Results, Run, Startup, median

MB = 1024 * 1024


def _run(requests: int, seconds: float, p50_us: float, cpu_s: float, rss: int, bad: int = 0) -> Run:
    return Run(LoadResult(requests, seconds, bad, 0, 0, p50_us, p50_us * 4), cpu_s, rss)


def test_cell_takes_medians_sums_errors_and_the_highest_peak() -> None:
    cell = Cell(
        "s",
        "inferkit",
        [
            _run(1000, 1.0, 1000, 0.5, 100 * MB),
            _run(3000, 1.0, 3000, 1.5, 300 * MB, bad=2),
            _run(2000, 1.0, 2000, 1.0, 200 * MB, bad=1),
        ],
    )
    assert cell.rps == 2000
    assert (cell.p50_ms, cell.p99_ms) == (2.0, 8.0)
    assert (cell.errors, cell.requests) == (3, 6000)
    assert cell.cpu_ms_per_request == 0.5
    assert cell.peak_rss == 300 * MB


def test_an_empty_cell_has_no_figures() -> None:
    cell = Cell("s", "x", skipped="wrong answer (see notes)")
    assert (cell.rps, cell.p50_ms, cell.cpu_ms_per_request, cell.peak_rss) == (None,) * 4
    assert median([]) is None


def _results() -> Results:
    results = Results("python benchmarks/run.py", {}, {"quick": True})
    results.scenario_labels["rest-sum16-c32"] = "REST sum [1,16] FP32, c=32"
    for name, role, ready, rss in [
        ("inferkit", "subject", 1.0, 100 * MB),
        ("mlserver-pw0", "baseline", 2.0, 250 * MB),
        ("starlette-bare", "ceiling", 0.5, 50 * MB),
    ]:
        results.startups[name] = Startup(name, f"{name} label", role, ready, rss, ["sum"])
    for name, rps in [("inferkit", 3000), ("mlserver-pw0", 2000), ("starlette-bare", 4000)]:
        results.cell("rest-sum16-c32", name).runs.append(_run(rps, 1.0, 500, rps / 2000, 90 * MB))
    results.cell("rest-sum16-c32", "starlette-v2").skipped = "wrong answer (see notes)"
    results.note("a note")
    results.note("a note")
    return results


def test_markdown_rows_carry_ratios_against_mlserver_and_bare() -> None:
    text = markdown(_results(), "mlserver-pw0", ["starlette-bare"])
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[1] == (
        "| REST sum [1,16] FP32, c=32 | inferkit | 3,000 | 1.50x | 0.75x | 0.50 | 2.00"
        " | 0 / 3,000 | 0.50 | 90 |"
    )
    assert rows[2].startswith("|  | mlserver-pw0 | 2,000 | 1.00x | 0.50x |")
    assert rows[4] == "|  | starlette-v2 | wrong answer (see notes) | | | | | | | |"
    assert (
        "| inferkit | inferkit label | 1.00 | 0.50x | - | - | 100 | 0.40x | - | - | sum |" in rows
    )
    assert text.count("- a note") == 1


def test_vs_bare_divides_by_the_ceiling_of_the_scenarios_transport() -> None:
    results = _results()
    results.scenario_labels["grpc-sum16-c32"] = "gRPC sum [1,16] FP32, c=32"
    results.startups["grpclib-bare"] = Startup("grpclib-bare", "grpclib", "ceiling", 0.5, MB)
    for name, rps in [("inferkit", 1500), ("grpclib-bare", 2000)]:
        results.cell("grpc-sum16-c32", name).runs.append(_run(rps, 1.0, 500, 1.0, 90 * MB))
    text = markdown(results, "mlserver-pw0", ["starlette-bare", "grpclib-bare"])
    assert "| REST sum [1,16] FP32, c=32 | inferkit | 3,000 | 1.50x | 0.75x |" in text
    assert "| gRPC sum [1,16] FP32, c=32 | inferkit | 1,500 | - | 0.75x |" in text
    assert "by mlserver-pw0's and by starlette-bare's or grpclib-bare's in the same" in text


def test_markdown_without_baselines_shows_no_ratios() -> None:
    text = markdown(_results(), None, [])
    assert "| REST sum [1,16] FP32, c=32 | inferkit | 3,000 | - | - |" in text
    assert "ratios divide requests/s by nothing (no baseline ran)" in text


def test_replace_section_keeps_everything_outside_the_markers() -> None:
    page = f"# Perf\n\nMethod.\n\n{START}\nold table\n{END}\n\nAfter.\n"
    assert replace_section(page, "\nnew table\n") == (
        f"# Perf\n\nMethod.\n\n{START}\nnew table\n{END}\n\nAfter.\n"
    )


@pytest.mark.parametrize("page", ["no markers", f"{END}\n{START}"])
def test_replace_section_needs_both_markers_in_order(page: str) -> None:
    with pytest.raises(ValueError, match="the document needs"):
        replace_section(page, "x")


def test_a_scenario_mlserver_cannot_run_is_compared_with_its_fallbacks_mlserver_figure() -> None:
    results = _results()
    results.scenario_labels["rest-sum1m-c4"] = "REST sum [1,1000000] FP32, c=4"
    results.scenario_labels["rest-sum1m-bin-c4"] = "REST sum [1,1000000] FP32 binary, c=4"
    results.mlserver_fallback["rest-sum1m-bin-c4"] = "rest-sum1m-c4"
    for name, rps in [("inferkit", 8), ("mlserver-pw0", 5)]:
        results.cell("rest-sum1m-c4", name).runs.append(_run(rps, 1.0, 500, 1.0, 90 * MB))
    results.cell("rest-sum1m-bin-c4", "inferkit").runs.append(_run(80, 1.0, 500, 1.0, 90 * MB))
    results.cell("rest-sum1m-bin-c4", "mlserver-pw0").skipped = "not supported"
    text = markdown(results, "mlserver-pw0", ["starlette-bare"])
    assert "| REST sum [1,1000000] FP32, c=4 | inferkit | 8.0 | 1.60x | - |" in text
    assert "| REST sum [1,1000000] FP32 binary, c=4 | inferkit | 80.0 | 16.00x\u2020 | - |" in text
    assert "|  | mlserver-pw0 | not supported | | | | | | | |" in text
    assert (
        "\u2020 REST sum [1,1000000] FP32 binary, c=4: *vs MLServer* divides by mlserver-pw0's"
        " requests/s in REST sum [1,1000000] FP32, c=4; mlserver-pw0 did not run this scenario"
        " (not supported)." in text
    )
    # Where MLServer ran the scenario itself, its own figure is the base and nothing is marked.
    results.cell("rest-sum1m-bin-c4", "mlserver-pw0").skipped = None
    results.cell("rest-sum1m-bin-c4", "mlserver-pw0").runs.append(_run(40, 1.0, 5, 1.0, MB))
    text = markdown(results, "mlserver-pw0", ["starlette-bare"])
    assert "| REST sum [1,1000000] FP32 binary, c=4 | inferkit | 80.0 | 2.00x | - |" in text
    assert "\u2020" not in text


def test_servers_on_uvicorn_are_compared_with_the_uvicorn_ceiling() -> None:
    results = _results()
    results.startups["uvicorn-bare"] = Startup("uvicorn-bare", "uvicorn", "ceiling", 0.5, MB)
    results.startups["inferkit-uvicorn"] = Startup("inferkit-uvicorn", "x", "subject", 1.0, MB)
    for name, rps in [("inferkit-uvicorn", 4000), ("uvicorn-bare", 5000)]:
        results.cell("rest-sum16-c32", name).runs.append(_run(rps, 1.0, 500, 1.0, 90 * MB))
    own = {"inferkit-uvicorn": ["uvicorn-bare"], "uvicorn-bare": ["uvicorn-bare"], "x": ["y"]}
    text = markdown(results, "mlserver-pw0", ["starlette-bare"], own)
    assert "| REST sum [1,16] FP32, c=32 | inferkit | 3,000 | 1.50x | 0.75x |" in text
    assert "|  | inferkit-uvicorn | 4,000 | 2.00x | 0.80x |" in text
    assert "|  | uvicorn-bare | 5,000 | 2.50x | 1.00x |" in text
    assert (
        "by mlserver-pw0's and by starlette-bare's (inferkit-uvicorn, uvicorn-bare:"
        " uvicorn-bare's) in the same scenario." in text
    )


def test_the_startup_table_shows_the_floors_and_each_servers_overhead_above_its_floor() -> None:
    results = _results()
    results.startups["inferkit"].floor = "floor"
    results.startups["mlserver-pw0"].floor = "floor-mlserver"
    floors = {
        "floor": Startup("floor", "libraries alone", "floor", 0.8, 90 * MB, ["digits-svc"]),
        "floor-mlserver": Startup("floor-mlserver", "theirs", "floor", 1.0, 100 * MB),
    }
    results.startups = {**floors, **results.startups}
    text = markdown(results, "mlserver-pw0", ["starlette-bare"])
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    # inferkit: 0.2 s and 10 MB above its floor, against MLServer's 1.0 s and 150 MB.
    assert (
        "| inferkit | inferkit label | 1.00 | 0.50x | +0.20 | 0.20x | 100 | 0.40x | +10 | 0.07x"
        in text
    )
    assert (
        "| mlserver-pw0 | mlserver-pw0 label | 2.00 | 1.00x | +1.00 | 1.00x | 250 | 1.00x" in text
    )
    # The floors themselves: plain ratios (how much of MLServer the libraries alone take).
    assert (
        "| floor | libraries alone | 0.80 | 0.40x | - | - | 90 | 0.36x | - | - | digits-svc |"
        in rows
    )
    # Servers with no floor (the bare apps) have no over-floor figures.
    assert (
        "| starlette-bare | starlette-bare label | 0.50 | 0.25x | - | - | 50 | 0.20x | - | - |"
        in text
    )
    assert "minus its floor's (`floor`, `floor-mlserver`)" in text
    assert "divides by mlserver-pw0's over-floor figure." in text
    # A floor that did not run leaves its servers without over-floor figures.
    results.startups["floor"] = Startup("floor", "libraries alone", "floor", skipped="failed")
    text = markdown(results, "mlserver-pw0", ["starlette-bare"])
    assert "| floor | libraries alone | failed | | | | | | | | |" in text
    assert "| inferkit | inferkit label | 1.00 | 0.50x | - | - | 100 | 0.40x | - | - |" in text
