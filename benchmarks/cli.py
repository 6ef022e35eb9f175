"""``python -m benchmarks`` and ``streamtally bench``: run the load tests and write JSON,
Markdown and a PNG plot, with a progress bar.

python -m benchmarks            # the operator's full run (about 10 minutes)
python -m benchmarks --quick    # CI: seconds, still checks sent == counted
python -m benchmarks --only streamtally-plain,streamtally-sealed --profile
python -m benchmarks --only streamtally-plain,streamtally-sealed --batch 1,4,8
python -m benchmarks --workers 2   # StreamTally as serve --workers 2 (N collectors + 1 aggregator)
streamtally bench --url http://127.0.0.1:8080 --admin-token T --metrics-url http://127.0.0.1:9464
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import progress, report, runner, servers

RESULTS = Path(__file__).resolve().parent / "results"


DESCRIPTION = "Load-test StreamTally side by side with nginx and aiohttp baselines."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags, for ``python -m benchmarks`` and ``streamtally bench``."""
    parser.add_argument("--quick", action="store_true", help="CI mode: seconds, no thresholds")
    parser.add_argument(
        "--out", type=Path, help="results folder (default benchmarks/results/<timestamp>/)"
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of {', '.join(runner.TARGETS)}",
    )
    parser.add_argument("--seconds", type=float, help="length of each fixed-rate run")
    parser.add_argument(
        "--fractions",
        help="comma-separated fractions of saturation for the latency curve, e.g. 0.5,0.8",
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample StreamTally with py-spy at 80%% load"
    )
    parser.add_argument("--seed", type=int, default=42, help="traffic seed")
    parser.add_argument(
        "--batch",
        default=",".join(str(b) for b in runner.BATCHES),
        help="comma-separated events per StreamTally report: the first for every phase, each "
        "further one a saturation run of its own, for events/s and viewers per core "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run the StreamTally targets as `streamtally serve --workers N` (N collector "
        "processes sharing the port and one aggregator process) and report each process's CPU",
    )
    parser.add_argument(
        "--url",
        help="measure a StreamTally already running at this http://host:port instead of "
        "starting one (only the streamtally targets; its CPU and memory are not measured)",
    )
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("STREAMTALLY_ADMIN_TOKEN"),
        help="with --url: its admin token (env STREAMTALLY_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--metrics-url",
        help="with --url: its operator listener, e.g. http://127.0.0.1:9464 (the counters "
        "the correctness check compares)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed flags describe; 0 when it ran and was correct."""
    plan = runner.QUICK if args.quick else runner.FULL
    if args.seconds:
        plan = replace(plan, rate_seconds=args.seconds, saturation_seconds=args.seconds)
    if args.fractions:
        plan = replace(plan, fractions=tuple(float(f) for f in args.fractions.split(",")))
    try:
        batches = tuple(int(b) for b in str(args.batch).split(","))
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        print(f"--batch: whole numbers of at least 1, got {args.batch!r}", file=sys.stderr)
        return 2
    targets: tuple[str, ...] = runner.TARGETS
    if args.only:
        targets = tuple(t.strip() for t in args.only.split(","))
        unknown = [t for t in targets if t not in runner.TARGETS]
        if unknown:
            print(f"unknown target(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
    workers = getattr(args, "workers", 1)
    if workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1 and (args.url or args.profile):
        print("--workers starts the server itself and does not profile it", file=sys.stderr)
        return 2
    remote = None
    if args.url:
        if not args.admin_token or not args.metrics_url:
            print("--url needs --admin-token and --metrics-url too", file=sys.stderr)
            return 2
        if args.profile:
            print("--profile needs a server the benchmark starts (not --url)", file=sys.stderr)
            return 2
        try:
            remote = servers.Remote(args.url, args.admin_token, args.metrics_url)
        except servers.ServerError as exc:
            print(exc, file=sys.stderr)
            return 2
        targets = tuple(t for t in targets if t in (runner.ST_PLAIN, runner.ST_SEALED))
        if not targets:
            print("--url measures only streamtally-plain and streamtally-sealed", file=sys.stderr)
            return 2
    out = args.out or RESULTS / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    bar: progress.Bar | None = None

    def say(text: str) -> None:
        if bar is not None:
            bar.say(text)
        else:
            print(text, file=sys.stderr, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so every server started is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="streamtally-bench-") as tmp:
        bench = runner.Bench(
            plan,
            Path(tmp),
            targets=targets,
            progress=say,
            profile=args.profile,
            seed=args.seed,
            artifacts=out,
            remote=remote,
            batches=batches,
            workers=workers,
        )
        bar = progress.Bar(bench.total_steps())
        bench.step = bar.step
        try:
            result = bench.run()
        except servers.ServerError as exc:
            bar.finish()
            say(f"benchmark stopped: {exc}")
            return 1
        bar.finish()
        bar = None
    result["wall_seconds"] = round(time.monotonic() - began, 1)
    written = report.write(result, out)
    say(f"done in {result['wall_seconds']:g} s; results in {out}:")
    for kind, path in written.items():
        say(f"  {kind}: {path}")
    if "png" not in written:
        say("  (no PNG: matplotlib is not installed; pip install matplotlib)")
    correctness = result.get("correctness")
    if correctness is not None and not correctness["ok"]:
        say("CORRECTNESS CHECK FAILED: " + correctness["detail"])
        return 1
    return 0
