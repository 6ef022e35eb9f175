"""Stop and hot-restart signals of a serving process (``serve``, ``aggregate``, ``collect``).

SIGTERM or SIGINT stop it; SIGHUP asks for a hot restart in place. A SIGHUP that arrives
before the server listens is remembered (:func:`note_early_hangup`) and acted on once it
does (:func:`until_signal`).
"""

from __future__ import annotations

import asyncio
import signal

__all__ = ["note_early_hangup", "until_signal"]

_early_hangup = False  # a SIGHUP before the server listens: acted on once it does


def _note_hangup(signum: int, frame: object) -> None:
    global _early_hangup
    _early_hangup = True


def note_early_hangup() -> None:
    """Remember a SIGHUP until the server installs its own handlers."""
    signal.signal(signal.SIGHUP, _note_hangup)


async def until_signal() -> bool:
    """Wait for SIGTERM/SIGINT (False: stop) or SIGHUP (True: hot restart)."""
    stop = asyncio.Event()
    hangup = False

    def on_hangup() -> None:
        nonlocal hangup
        hangup = True
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    if _early_hangup:
        on_hangup()
    await stop.wait()
    return hangup
