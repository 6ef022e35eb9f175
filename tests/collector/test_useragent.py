"""User agent -> (browser, OS, device) from small fixed sets, and the bot verdict."""

from __future__ import annotations

import json

import pytest

from collector import useragent
from collector.useragent import (
    BOT_REASONS,
    BROWSERS,
    DEVICES,
    OSES,
    UAClass,
    bot_reason,
    classify_ua,
)
from tests.captures import CMCD_CAPTURES

FIXTURES = CMCD_CAPTURES
HEADLESS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/156.0.0.0 Safari/537.36"
)

VIEWERS = [
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        ("Chrome", "Windows", "desktop"),
        id="chrome-windows",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        ("Firefox", "Windows", "desktop"),
        id="firefox-windows",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        ("Firefox", "Linux", "desktop"),
        id="firefox-ubuntu",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Safari/605.1.15",
        ("Safari", "macOS", "desktop"),
        id="safari-macos",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        ("Edge", "Windows", "desktop"),
        id="edge-windows",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
        ("Opera", "Windows", "desktop"),
        id="opera-windows",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Ubuntu Chromium/122.0.6261.94 Chrome/122.0.6261.94 Safari/537.36",
        ("Chromium", "Linux", "desktop"),
        id="chromium-ubuntu",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        ("Chrome", "ChromeOS", "desktop"),
        id="chromebook",
    ),
    pytest.param(HEADLESS, ("Chrome", "Linux", "desktop"), id="headless-chrome-fixture"),
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        ("Safari", "iOS", "mobile"),
        id="iphone-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        ("Chrome", "iOS", "mobile"),
        id="iphone-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        ("Safari", "iPadOS", "tablet"),
        id="ipad-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.6778.81 Mobile Safari/537.36",
        ("Chrome", "Android", "mobile"),
        id="android-phone-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36",
        ("Chrome", "Android", "mobile"),
        id="android-phone-reduced-ua",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 "
        "(KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
        ("Samsung Internet", "Android", "mobile"),
        id="android-phone-samsung-internet",
    ),
    pytest.param(
        "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
        ("Firefox", "Android", "mobile"),
        id="android-phone-firefox",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.6778.81 Safari/537.36",
        ("Chrome", "Android", "tablet"),
        id="android-tablet",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Silk/131.2.1 like Chrome/131.0.6778.105 Safari/537.36",
        ("Other", "Android", "tablet"),
        id="kindle-fire-silk",
    ),
    pytest.param(
        "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "76.0.3809.146/6.0 TV Safari/537.36",
        ("Other", "Tizen", "tv"),
        id="samsung-tv-tizen",
    ),
    pytest.param(
        "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/87.0.4280.88 Safari/537.36 WebAppManager",
        ("Chrome", "webOS", "tv"),
        id="lg-tv-webos",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 9; SHIELD Android TV Build/PPR1.180610.011) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ("Chrome", "Android", "tv"),
        id="android-tv",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 9; AFTMM Build/PS7633.3445N; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.102 Mobile Safari/537.36",
        ("Chrome", "Android", "tv"),
        id="fire-tv-stick",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux armv7l) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/114.0.0.0 Safari/537.36 CrKey/1.56.500000 DeviceType/Chromecast",
        ("Chrome", "Linux", "tv"),
        id="chromecast",
    ),
    pytest.param(
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/13.0 Safari/605.1.15",
        ("Other", "Other", "console"),
        id="playstation-5",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edge/44.18363.8131",
        ("Edge", "Windows", "console"),
        id="xbox",
    ),
    pytest.param("x", ("Other", "Other", "other"), id="unrecognised"),
]

BOTS = [
    pytest.param(
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "bot_ua",
        id="googlebot",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 "
        "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "bot_ua",
        id="googlebot-smartphone",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "bot_ua",
        id="bingbot",
    ),
    pytest.param(
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
        "+https://openai.com/gptbot)",
        "bot_ua",
        id="gptbot",
    ),
    pytest.param("curl/8.5.0", "bot_ua", id="curl"),
    pytest.param("Wget/1.21.4", "bot_ua", id="wget"),
    pytest.param("python-requests/2.32.3", "bot_ua", id="python-requests"),
    pytest.param("Python/3.11 aiohttp/3.9.5", "bot_ua", id="aiohttp"),
    pytest.param(
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
        "PhantomJS/2.1.1 Safari/538.1",
        "bot_ua",
        id="phantomjs",
    ),
    pytest.param("", "empty_ua", id="empty"),
    pytest.param("   ", "empty_ua", id="whitespace"),
]


@pytest.mark.parametrize(("ua", "expected"), VIEWERS)
def test_viewer_user_agents_get_their_classes(ua: str, expected: tuple[str, str, str]) -> None:
    result = classify_ua(ua)
    assert (result.browser, result.os, result.device) == expected
    assert result.bot is None
    assert bot_reason(ua) is None


@pytest.mark.parametrize(("ua", "reason"), BOTS)
def test_non_players_get_a_bot_reason(ua: str, reason: str) -> None:
    assert classify_ua(ua).bot == reason
    assert bot_reason(ua) == reason


@pytest.mark.parametrize("ua", [p.values[0] for p in VIEWERS + BOTS])
def test_every_class_comes_from_the_fixed_sets(ua: str) -> None:
    result = classify_ua(ua)
    assert result.browser in BROWSERS
    assert result.os in OSES
    assert result.device in DEVICES
    assert result.bot is None or result.bot in BOT_REASONS


def test_headless_chrome_of_the_player_captures_is_a_viewer() -> None:
    """Our end-to-end tests drive real players in headless Chromium: they must count."""
    agents = set()
    for capture in FIXTURES.glob("*.jsonl"):
        for line in capture.read_text().splitlines():
            headers = {k.lower(): v for k, v in json.loads(line)["headers"].items()}
            agents.add(headers["user-agent"])
    assert HEADLESS in agents
    for ua in agents:
        assert classify_ua(ua) == UAClass(browser="Chrome", os="Linux", device="desktop", bot=None)


def test_results_are_cached_and_the_cache_is_bounded() -> None:
    useragent._classify.cache_clear()
    classify_ua(HEADLESS)
    classify_ua(HEADLESS)
    info = useragent._classify.cache_info()
    assert (info.hits, info.misses) == (1, 1)
    assert info.maxsize == useragent.CACHE_SIZE


def test_huge_user_agent_is_classified_by_its_head_and_cached_by_it() -> None:
    useragent._classify.cache_clear()
    head = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/133.0 "
    head += "x" * useragent.MAX_UA_CHARS
    one = classify_ua(head + "a" * 100_000)
    two = classify_ua(head + "b" * 100_000)
    assert one == two
    assert one.browser == "Firefox"
    assert useragent._classify.cache_info().hits == 1


def _crawler_samples() -> list[str]:
    from crawlerdetect.providers.crawlers import data

    browser = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0.0.0 Safari/537.36"
    literal = [p for p in data if not any(ch in p for ch in "\\[]().*+?{}|^$")]
    embedded = [f"{browser} {name}/1.0" for name in literal[::25]]
    return [
        *(p.values[0] for p in VIEWERS + BOTS),
        *embedded,
        *literal[::40],
        "  curl/8.5.0",  # anchored pattern after crawlerdetect's strip()
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "Mozilla/5.0 (Linux; Android 14) Chrome/131.0 Mobile Safari/537.36 YandexSearch/24.1",
    ]


@pytest.mark.parametrize("ua", _crawler_samples())
def test_re2_prefilter_gives_exactly_crawlerdetects_verdict(ua: str) -> None:
    pytest.importorskip("re2", reason="the RE2 prefilter exists only with google-re2")
    from crawlerdetect import CrawlerDetect

    assert useragent._crawler_prefilter() is not None
    assert useragent._is_crawler(ua) == CrawlerDetect().is_crawler(ua)
