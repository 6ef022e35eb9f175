"""Write a run's results: ``results.json``, ``results.md`` (tables) and ``latency.png``.

The plot needs matplotlib (the optional ``bench`` extra); without it the PNG is left out
and the Markdown says so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

JSON_NAME = "results.json"
MD_NAME = "results.md"
PNG_NAME = "latency.png"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _processes(result: dict[str, Any]) -> list[str]:
    """``--workers N``: the aggregator's and each collector's CPU at saturation."""
    measured = [t for t in result["targets"].values() if t.get("processes")]
    if not measured:
        return []
    cpus = result.get("server_cpus")
    where = f"cores {', '.join(map(str, cpus))}" if cpus else "every core (not pinned)"
    lines = [
        f"## serve --workers {result['workers']}: each process at saturation",
        "",
        f"The aggregator and its {result['workers']} collectors ran on {where} (a process "
        f"tree inherits one affinity), the generators on core {result['generator_cpu']}. "
        "Busy: CPU seconds per wall second of the saturation run. Each report carries one "
        "event.",
        "",
        "| server | aggregator CPU-s (busy) | aggregator events per CPU-second "
        "| collectors' CPU-s (busy) | reports per collector CPU-second |",
        "|---|---:|---:|---|---:|",
    ]
    for t in measured:
        p = t["processes"]
        each = ", ".join(
            f"{c:.2f} ({b:.0%})"
            for c, b in zip(p["collector_cpu_seconds"], p["collector_busy"], strict=True)
        )
        lines.append(
            f"| {t['label']} | {p['aggregator_cpu_seconds']:.2f} ({p['aggregator_busy']:.0%}) "
            f"| {_num(p['aggregator_events_per_cpu_second'])} | {each} "
            f"| {_num(p['collector_reports_per_cpu_second'])} |"
        )
    return [*lines, ""]


def markdown(result: dict[str, Any], png: str | None) -> str:
    """The tables of docs/performance.md for one run."""
    lines: list[str] = []
    machine = result["machine"]
    plan = result["plan"]
    lines += [
        f"# StreamTally benchmark ({plan['name']} run, {result['started'][:19]}Z)",
        "",
        f"Machine: {machine['cpus']} x {machine['cpu_model']}; Python {machine['python']}; "
        f"{machine.get('nginx') or 'no nginx'}; {machine.get('wrk') or 'no wrk'}. "
        f"Server pinned to core {result['server_cpu']}, generators to core "
        f"{result['generator_cpu']}. Load average at start "
        f"{', '.join(f'{x:.2f}' for x in machine['load_average'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in machine.get('load_average_end', []))}.",
        "",
        "## Throughput, latency and CPU",
        "",
        "Saturation: wrk, closed loop, "
        f"{plan['wrk_connections']} connections, {plan['saturation_seconds']:g} s. Latency: "
        f"open loop at a fixed rate, {plan['connections']} connections, "
        f"{plan['rate_seconds']:g} s, measured from each request's scheduled send time "
        "(no coordinated omission).",
        "",
        "| server | reports/s at saturation (1 core, wrk) | server busy | CPU-ms per 1,000 "
        "| reports per CPU-second | p50 / p99 / p99.9 at 50% (ms) "
        "| p50 / p99 / p99.9 at 80% (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in result["targets"].values():
        sat = t["saturation"] or {}
        cpu_ms = sat.get("cpu_seconds_per_1000", 0) * 1e3
        busy = sat.get("server_busy")
        cells = [
            t["label"],
            _num(sat.get("rps")),
            f"{busy:.0%}" if busy is not None else "-",
            _num(cpu_ms, 1),
            _num(1e3 / cpu_ms * 1e3 if cpu_ms else None),
        ]
        for fraction in (0.5, 0.8):
            p = next((p for p in t["points"] if abs(p["fraction"] - fraction) < 1e-9), None)
            if p is None:
                cells.append("-")
            else:
                mark = "" if p["kept_up"] else " (fell behind)"
                cells.append(
                    f"{_num(p['p50_ms'], 2)} / {_num(p['p99_ms'], 2)} / "
                    f"{_num(p['p999_ms'], 2)}{mark}"
                )
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    batched = {n: t["batches"] for n, t in result["targets"].items() if t.get("batches")}
    batched = {n: b for n, b in batched.items() if n.startswith("streamtally")}
    if batched:
        beats = result.get("heartbeats_s") or [10, 30]
        lines += [
            "## Events per report, events/s and viewers per core",
            "",
            "Saturation (wrk, as above) with reports of several events each, as the player "
            "snippet queues them (`flushInterval`, player-snippet/src/batch.js): events per "
            "report is what the answered reports carried on average (a session's last report "
            "may carry fewer). Viewers per core at a heartbeat of H s = events per CPU-second "
            "x H: a viewer sends one `t` event every H s (its few state changes per session "
            "left out). With the snippet's default `flushInterval` of 5 s and a 10 s heartbeat "
            "a playing viewer's reports carry one event each (its start-up several): the "
            "1-event rows are that case; the others apply where `flushInterval` is raised to "
            "N x the heartbeat.",
            "",
            "| server | events per report | reports/s | events/s | CPU-ms per 1,000 reports "
            "| events per CPU-second | "
            + " | ".join(f"viewers per core, {h} s heartbeat" for h in beats)
            + " |",
            "|---|---:|---:|---:|---:|---:|" + "---:|" * len(beats),
        ]
        for name, runs in batched.items():
            for b in runs:
                sat = b["saturation"]
                viewers = b.get("viewers_per_core") or {}
                lines.append(
                    f"| {name} | {b['events_per_report']:.2f} ({b['batch']}) | "
                    f"{_num(sat['rps'])} | {_num(b.get('events_rps'))} | "
                    f"{_num(sat['cpu_seconds_per_1000'] * 1e3, 1)} | "
                    f"{_num(b.get('events_per_cpu_second'))} | "
                    + " | ".join(_num(viewers.get(str(h))) for h in beats)
                    + " |"
                )
        lines.append("")
    lines += _processes(result)
    check = result.get("generator_check")
    if check:
        point = check["open_loop"]
        lines += [
            "## Does the Python generator keep up?",
            "",
            f"Against nginx, on its one core: closed loop {_num(check['closed_loop_rps'])} "
            f"req/s (generator busy {check['closed_loop_generator_busy']:.0%}); open loop at "
            f"{_num(point['offered_rps'])} req/s offered: {_num(point['achieved_rps'])} "
            f"answered per second, p50 {_num(point['p50_ms'], 2)} ms, p99 "
            f"{_num(point['p99_ms'], 2)} ms, p99.9 {_num(point['p999_ms'], 2)} ms; requests "
            f"went out at most {_num(point['send_lag_p99_ms'], 3)} ms after their due time "
            "(p99).",
            "",
        ]
    goals = result.get("goals") or []
    if goals:
        lines += ["## Targets", "", "| what | measured | target | met |", "|---|---:|---|---|"]
        for g in goals:
            value = g["value"]
            shown = f"{value:.0%}" if "vs" in g["what"] else _num(value, 2)
            met = "yes" if g["met"] else "NO"
            lines.append(f"| {g['what']} | {shown} | {g['target']} | {met} |")
        lines.append("")
    memory = result.get("memory")
    if memory:
        lines += [
            "## Memory",
            "",
            f"{memory['sessions_sent']:,} new sessions ({plan['memory_events']} events each) "
            f"took the active sessions from {memory['active_sessions_before']:,.0f} to "
            f"{memory['active_sessions_after']:,.0f} and the server's RSS from "
            f"{memory['rss_before'] / 1e6:,.1f} MB to {memory['rss_after'] / 1e6:,.1f} MB: "
            f"**{_num(memory['bytes_per_session'])} bytes per active session, "
            f"{_num(memory['mb_per_10k_sessions'], 1)} MB per 10k active sessions**.",
            "",
        ]
    flush = result.get("flush")
    if flush and flush.get("cycles"):
        lines += [
            f"StreamTally ran {flush['cycles']} flush cycles during the load phases, "
            f"{_num(flush['mean_ms'], 1)} ms each on average (wall time, ClickHouse insert "
            "included; `streamtally_flush_seconds`).",
            "",
        ]
    correctness = result.get("correctness")
    if correctness:
        lines += [
            "## Correctness",
            "",
            f"**{'OK' if correctness['ok'] else 'FAILED'}**: {correctness['detail']}.",
            "",
            "| phase | tool | events sent (answered 204) | counted | dropped | rejected | ok |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for p in correctness["phases"]:
            sent = _num(p["events_sent"])
            if p["sent_upper_bound"] != p["events_sent"]:
                sent += f" … {_num(p['sent_upper_bound'])}"
            lines.append(
                f"| {p['phase']} | {p['tool']} | {sent} | {_num(p['events_counted'])} | "
                f"{p['dropped']} | {p['rejected']} | {'yes' if p['ok'] else 'NO'} |"
            )
        lines.append("")
    steps = {n: t["steps_us"] for n, t in result["targets"].items() if t.get("steps_us")}
    if steps:
        names = list(next(iter(steps.values())).keys())
        lines += [
            "## Time per pipeline step (µs per report, at saturation, from /metrics)",
            "",
            "| step | " + " | ".join(steps) + " |",
            "|---|" + "---:|" * len(steps),
        ]
        for step in names:
            lines.append(
                f"| {step} | " + " | ".join(_num(s.get(step), 1) for s in steps.values()) + " |"
            )
        lines.append(
            "| **sum** | " + " | ".join(_num(sum(s.values()), 1) for s in steps.values()) + " |"
        )
        lines.append("")
    profile = result.get("profile") or {}
    if profile:
        lines += [
            "## Where the time goes (py-spy samples of the server at 80% load)",
            "",
            "Share of the server's on-CPU samples, by the innermost layer on the stack.",
            "",
        ]
        for name, summary in profile.items():
            if "layers_percent" not in summary:
                lines += [f"- {name}: no profile ({summary.get('error', 'no samples')})", ""]
                continue
            lines += [
                f"**{name}** ({summary['samples']:,} samples)",
                "",
                "| layer | % of samples |",
                "|---|---:|",
            ]
            layers = summary["layers_percent"].items()
            lines += [f"| {layer} | {pct:.1f} |" for layer, pct in layers]
            lines += ["", "Top functions (self time):", ""]
            lines += [f"- `{fn}` {pct:.1f}%" for fn, pct in summary["top_self_percent"][:12]]
            lines.append("")
    lines += ["## Latency against offered rate", ""]
    if png:
        lines += [f"![p50 and p99 latency against offered rate]({png})", ""]
    else:
        lines += ["(no plot: matplotlib is not installed; `pip install matplotlib`)", ""]
    lines += [
        "| server | offered/s | achieved/s | p50 ms | p99 ms | p99.9 ms | server CPU-ms "
        "per 1,000 | send lag p99 ms | generator stall ms | host steal ms | flushes | "
        "GC passes >= 10 ms | other server threads CPU-ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in result["targets"].values():
        for p in t["points"]:
            lines.append(
                f"| {t['name']} | {_num(p['offered_rps'])} | {_num(p['achieved_rps'])} | "
                f"{_num(p['p50_ms'], 2)} | {_num(p['p99_ms'], 2)} | {_num(p['p999_ms'], 2)} | "
                f"{_num(p['cpu_seconds_per_1000'] * 1e3, 1)} | {_num(p['send_lag_p99_ms'], 3)} | "
                f"{_num(p.get('generator_stall_ms'), 1)} | {_num(p.get('steal_ms'))} | "
                f"{_num(p.get('flushes'))} | {_num(p.get('gc_pauses_over_10ms'))} | "
                f"{_num(p.get('helper_threads_cpu_ms'))} |"
            )
    lines.append("")
    notes = result.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    """p50 and p99 latency against offered rate, every server; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=110)
    colors = ["#444444", "#1f77b4", "#9467bd", "#2ca02c", "#d62728", "#ff7f0e"]
    for color, t in zip(colors, result["targets"].values(), strict=False):
        points = sorted(t["points"], key=lambda p: p["offered_rps"])
        if not points:
            continue
        x = [p["offered_rps"] for p in points]
        ax.plot(x, [p["p99_ms"] for p in points], "-o", color=color, label=t["label"])
        ax.plot(x, [p["p50_ms"] for p in points], "--", color=color, alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (requests/s, open loop)")
    ax.set_ylabel("latency (ms, from scheduled send time)")
    ax.axhline(10.0, color="#999999", linewidth=0.8, linestyle=":")
    ax.grid(True, which="both", alpha=0.25)
    ax.set_title("p99 (solid) and p50 (dashed) latency against offered rate, one core each")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.legend(fontsize=8, ncol=2, loc="lower center", frameon=False)
    fig.savefig(path)
    plt.close(fig)
    return True


def write(result: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Write the three files into ``folder``; returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    png = folder / PNG_NAME
    if plot(result, png):
        written["png"] = png
    md = folder / MD_NAME
    md.write_text(markdown(result, PNG_NAME if "png" in written else None))
    written["md"] = md
    data = folder / JSON_NAME
    data.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    written["json"] = data
    return written
