"""``streamtally bench``: the load benchmark (``benchmarks/``, ``python -m benchmarks``) as a
subcommand, with a progress bar, against a server it starts or one given by ``--url``;
writes results.json, results.md and latency.png.

The benchmark lives in the source tree, not in the installed package (it needs the bench
extra, wrk and nginx for its baselines); without it the subcommand says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# An editable install (pip install -e .) runs from the checkout: benchmarks/ sits next to
# aggregator/, though only collector and aggregator are packages of the wheel.
CHECKOUT = Path(__file__).resolve().parents[1]

UNAVAILABLE = (
    "streamtally bench runs the benchmarks/ package of a source checkout "
    "(pip install -e '.[bench]' there): {error}"
)


def add_cli(sub: Any) -> None:
    """Add ``bench`` to the ``streamtally`` subcommands."""
    if (CHECKOUT / "benchmarks" / "cli.py").is_file() and str(CHECKOUT) not in sys.path:
        sys.path.append(str(CHECKOUT))
    try:
        from benchmarks import cli
    except ImportError as exc:
        error = str(exc)
        bench = sub.add_parser(
            "bench",
            help="run the load benchmark (needs a source checkout)",
            description=UNAVAILABLE.format(error=error),
        )
        bench.set_defaults(func=lambda args: _unavailable(error))
        return
    bench = sub.add_parser(
        "bench",
        help="run the load benchmark: JSON, Markdown and a PNG plot",
        description=cli.DESCRIPTION,
    )
    cli.add_arguments(bench)
    bench.set_defaults(func=cmd_bench)


def _unavailable(error: str) -> int:
    print("streamtally: " + UNAVAILABLE.format(error=error), file=sys.stderr)
    return 2


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks import cli

    return cli.run(args)
