"""``python -m benchmarks``: run the load tests and write JSON, Markdown and a PNG plot.

python -m benchmarks            # the operator's full run (about 10 minutes)
python -m benchmarks --quick    # CI: seconds, still checks sent == counted
python -m benchmarks --only streamtally-plain,streamtally-sealed --profile
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import report, runner

RESULTS = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Load-test StreamTally side by side with nginx and aiohttp baselines.",
    )
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = runner.QUICK if args.quick else runner.FULL
    if args.seconds:
        plan = replace(plan, rate_seconds=args.seconds, saturation_seconds=args.seconds)
    if args.fractions:
        plan = replace(plan, fractions=tuple(float(f) for f in args.fractions.split(",")))
    targets = runner.TARGETS
    if args.only:
        targets = tuple(t.strip() for t in args.only.split(","))
        unknown = [t for t in targets if t not in runner.TARGETS]
        if unknown:
            print(f"unknown target(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
    out = args.out or RESULTS / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    def say(text: str) -> None:
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
        )
        result = bench.run()
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
