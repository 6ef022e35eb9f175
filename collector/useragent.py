"""User agent -> coarse classes (browser, OS, device) and a bot verdict.

Classes come from small fixed sets, because they become aggregate dimensions:
``BROWSERS``, ``OSES``, ``DEVICES``; ``bot`` is None or one of ``BOT_REASONS``.
Parsing uses ua-parser 1.x (``ua-parser-rs``, if installed, makes it ~20x faster) and
crawlerdetect (``google-re2``, if installed, makes its no-match case ~300x faster);
results are cached in memory by user agent (``functools.lru_cache``,
bounded). The cache is never written anywhere and its keys are never logged.

Decisions:
- HeadlessChrome is Chrome, not a bot. Real players driven by headless Chromium (our own
  end-to-end tests, the captures in fixtures/cmcd) must count; a crawler that runs a
  video player is indistinguishable from a viewer by its user agent anyway.
- Not a player, so a bot: known crawlers, spiders, monitors and HTTP libraries (curl,
  Wget, python-requests, aiohttp, ... as listed by crawlerdetect, or ua-parser's
  ``Spider`` device) -> ``bot_ua``; an empty user agent -> ``empty_ua``.
- iPad user agents give ``iPadOS``/``tablet``; iPadOS Safari in its default "desktop"
  mode sends a Macintosh user agent and is counted as macOS/desktop (undetectable).
- Android without ``Mobile`` is a tablet (Google's convention), unless it is a TV.
- "Safari" outside macOS/iOS/iPadOS (Samsung TVs, PlayStation) is a WebKit or Chromium
  engine that borrows the token, so ``Other``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import ua_parser
from crawlerdetect import CrawlerDetect
from crawlerdetect.crawlerdetect import get_compiled_exclusions_regex
from crawlerdetect.providers.crawlers import data as crawler_patterns
from ua_parser import Domain

try:
    import re2  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - google-re2 is optional
    re2 = None

BROWSERS = frozenset(
    {"Chrome", "Firefox", "Safari", "Edge", "Opera", "Samsung Internet", "Chromium", "Other"}
)
OSES = frozenset(
    {"Windows", "macOS", "Linux", "Android", "iOS", "iPadOS", "ChromeOS", "Tizen", "webOS", "Other"}
)
DEVICES = frozenset({"desktop", "mobile", "tablet", "tv", "console", "other"})
BOT_REASONS = frozenset({"bot_ua", "empty_ua"})

CACHE_SIZE = 4096
MAX_UA_CHARS = 1024  # longer user agents are classified by their first 1024 characters

_BROWSER_BY_FAMILY = {
    "chrome": "Chrome",
    "chrome mobile": "Chrome",
    "chrome mobile ios": "Chrome",
    "chrome mobile webview": "Chrome",
    "chrome frame": "Chrome",
    "headlesschrome": "Chrome",
    "safari": "Safari",
    "mobile safari": "Safari",
    "mobile safari ui/wkwebview": "Safari",
    "edge": "Edge",
    "edge mobile": "Edge",
    "samsung internet": "Samsung Internet",
    "chromium": "Chromium",
}
_OS_BY_FAMILY = {
    "windows": "Windows",
    "mac os x": "macOS",
    "mac os": "macOS",
    "macos": "macOS",
    "ios": "iOS",
    "android": "Android",
    "chromecast android": "Android",
    "chrome os": "ChromeOS",
    "chromeos": "ChromeOS",
    "tizen": "Tizen",
    "webos": "webOS",
    "web0s": "webOS",
    "ubuntu": "Linux",
    "debian": "Linux",
    "fedora": "Linux",
    "red hat": "Linux",
    "gentoo": "Linux",
    "centos": "Linux",
    "kubuntu": "Linux",
    "xubuntu": "Linux",
    "mandriva": "Linux",
    "slackware": "Linux",
    "mageia": "Linux",
    "opensuse": "Linux",
    "suse": "Linux",
}
_DESKTOP_OSES = frozenset({"Windows", "macOS", "Linux", "ChromeOS"})
_APPLE_OSES = frozenset({"macOS", "iOS", "iPadOS"})

_TV = re.compile(
    r"smart-?tv|\btv\b|android ?tv|googletv|hbbtv|\bcrkey\b|bravia|apple ?tv|appletv"
    r"|\baft[a-z]|\broku|netcast|vidaa|\bviera\b|aquos|philipstv|web0s|webos.?tv",
    re.IGNORECASE,
)
_CONSOLE = re.compile(r"playstation|xbox|nintendo", re.IGNORECASE)
_TABLET = re.compile(r"ipad|tablet|\bkindle\b|\bsilk/|playbook", re.IGNORECASE)
_MOBILE = re.compile(r"mobi|iphone|ipod|windows phone|iemobile|opera mini|kaios", re.IGNORECASE)
_ANDROID = re.compile(r"android", re.IGNORECASE)
_HEADLESS = re.compile(r"HeadlessChrome", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class UAClass:
    """What is kept of a user agent: classes from the fixed sets, and the bot reason."""

    browser: str
    os: str
    device: str
    bot: str | None


_EMPTY = UAClass(browser="Other", os="Other", device="other", bot="empty_ua")


@cache
def _resolver() -> Any:
    """ua-parser's fastest available resolver over its bundled regexes, built once."""
    fast = ua_parser.RegexResolver is not None or ua_parser.Re2Resolver is not None
    matchers = ua_parser.load_lazy_builtins() if fast else ua_parser.load_builtins()
    return ua_parser.BestAvailableResolver(matchers)


@cache
def _crawlers() -> CrawlerDetect:
    return CrawlerDetect()


@cache
def _crawler_prefilter() -> Callable[[str], object] | None:
    """crawlerdetect's crawler list as one RE2 automaton (~5 us a search, against ~1-2 ms
    for Python's ``re`` over 1,400 alternatives), or None without google-re2.

    RE2 has no lookahead, so ``Yandex(?!Search)`` is relaxed to ``Yandex``: the prefilter
    matches a superset of what crawlerdetect matches, and every hit is confirmed by
    crawlerdetect itself, so verdicts are exactly crawlerdetect's.
    """
    if re2 is None:
        return None
    relaxed = [re.sub(r"\(\?<?[!=][^)]*\)", "", p) for p in crawler_patterns]
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = 64 << 20
    try:
        return re2.compile("(" + "|".join(relaxed) + ")", options).search  # type: ignore[no-any-return]
    except re2.error:  # a future pattern RE2 cannot express: use crawlerdetect alone
        return None


def _is_crawler(ua: str) -> bool:
    """crawlerdetect's verdict, made fast for the common case (no crawler) with RE2."""
    search = _crawler_prefilter()
    if search is not None:
        agent = get_compiled_exclusions_regex().sub("", ua.strip())
        if not agent or not search(agent):
            return False
    return bool(_crawlers().is_crawler(ua))


def warm_up() -> None:
    """Build the parsers now (~0.2 s) rather than on the first report."""
    classify_ua("Mozilla/5.0")


def classify_ua(ua: str) -> UAClass:
    """Coarse classes of a user agent (cached by user agent, in memory only)."""
    return _classify(ua[:MAX_UA_CHARS])


def bot_reason(ua: str) -> str | None:
    """Why a user agent is not a viewer's player (one of BOT_REASONS), or None."""
    return classify_ua(ua).bot


@lru_cache(maxsize=CACHE_SIZE)
def _classify(ua: str) -> UAClass:
    if not ua.strip():
        return _EMPTY
    # Headless Chrome counts as Chrome (see module doc); crawlerdetect lists "Headless".
    text = _HEADLESS.sub("Chrome", ua)
    result = _resolver()(text, Domain.ALL)
    ua_family = result.user_agent.family if result.user_agent else ""
    os_family = result.os.family if result.os else ""
    device_family = result.device.family if result.device else ""
    device_brand = (result.device.brand or "") if result.device else ""

    bot = "bot_ua" if device_family == "Spider" or _is_crawler(text) else None
    browser = _browser(ua_family)
    os = _OS_BY_FAMILY.get(os_family.lower()) or (
        "Linux" if "linux" in os_family.lower() else "Other"
    )
    device = _device(text, os, device_family, device_brand, bot is not None)
    if os == "iOS" and device == "tablet":
        os = "iPadOS"
    if browser == "Safari" and os not in _APPLE_OSES:
        browser = "Other"  # TVs' and consoles' WebKit/Chromium engines that say "Safari"
    return UAClass(browser=browser, os=os, device=device, bot=bot)


def _browser(family: str) -> str:
    low = family.lower()
    if found := _BROWSER_BY_FAMILY.get(low):
        return found
    if low.startswith("firefox"):
        return "Firefox"
    if low.startswith("opera"):
        return "Opera"
    return "Other"


def _device(text: str, os: str, family: str, brand: str, bot: bool) -> str:
    if bot:
        return "other"
    if os in ("Tizen", "webOS") or _TV.search(text) or "TV" in family:
        return "tv"
    if _CONSOLE.search(text):
        return "console"
    if family in ("iPad", "Kindle") or brand == "Generic_Android_Tablet" or _TABLET.search(text):
        return "tablet"
    if _MOBILE.search(text):
        return "mobile"
    if os == "Android" or _ANDROID.search(text):
        return "tablet"
    if os in _DESKTOP_OSES:
        return "desktop"
    return "other"
