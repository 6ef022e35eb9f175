"""The collector's settings: everything that touches a request. Declared once, here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collector.settings import at_least, between, cidrs, listen_address, register, setting


@register
@dataclass(frozen=True, slots=True)
class CollectorConfig:
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8080, "TCP port to listen on (0: any free port)", check=between(0, 65535))
    metrics_listen: str = setting(
        "127.0.0.1:9464",
        "HOST:PORT of the operator-only listener serving GET /metrics (never the public "
        "port); empty or off: no metrics listener",
        check=listen_address,
    )
    data_dir: Path = setting(
        Path("streamtally-data"),
        "folder for the embedded ClickHouse, the HPKE keys and the spool",
    )
    trusted_proxies: tuple[str, ...] = setting(
        [], "comma-separated CIDRs whose X-Forwarded-For is believed", check=cidrs
    )
    max_body_bytes: int = setting(64 * 1024, "largest report body accepted", check=at_least(64))
    key_overlap_seconds: int = setting(
        7 * 24 * 3600,
        "how long a rotated-out HPKE key keeps opening reports",
        check=at_least(0),
    )
    key_rotation_seconds: int = setting(
        7 * 24 * 3600,
        "the running service makes a new HPKE key when the current one is this old (0: never)",
        check=at_least(0),
    )
    keys_max_age_seconds: int = setting(
        3600, "Cache-Control max-age of GET /v1/keys", check=at_least(0)
    )
    replay_window_seconds: int = setting(
        600, "a sealed body's enc seen again within this window is refused (422)", check=at_least(1)
    )
    replay_max_entries: int = setting(
        2_000_000, "most encs remembered; the window shortens past it", check=at_least(1000)
    )
    rate_limit_per_second: float = setting(
        20.0,
        "reports per second per playback session (CMCD sid; per IP and user agent for reports "
        "without one) before 429",
        check=at_least(0.1),
    )
    rate_limit_burst: int = setting(
        200, "burst allowance of the per-session limit", check=at_least(1)
    )
    address_rate_limit_per_second: float = setting(
        2000.0,
        "reports per second per client address before 429, whatever the sessions: viewers "
        "behind one NAT share it, so keep it far above rate_limit_per_second",
        check=at_least(0.1),
    )
    address_rate_limit_burst: int = setting(
        20_000, "burst allowance of the per-address limit", check=at_least(1)
    )
    viewer_key_grace_seconds: int = setting(
        3600,
        "how long after UTC midnight yesterday's viewer secret is kept for late reports",
        check=at_least(0),
    )
    session_idle_seconds: int = setting(
        1800, "a playback session silent this long is ended and forgotten", check=at_least(10)
    )
    cors_max_age_seconds: int = setting(
        86400, "Access-Control-Max-Age of CORS preflight answers", check=at_least(0)
    )
    geoip_db: Path | None = setting(
        None,
        "an MMDB file (GeoLite2-Country, DB-IP lite) to use instead of the bundled data",
    )
