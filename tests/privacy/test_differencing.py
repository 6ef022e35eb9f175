"""The differencing auditor over property-based traffic, in-process (fast, many examples).

The same auditor runs over the real service in tests/privacy/test_service_audit.py.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.privacy.auditor import Auditor
from tests.privacy.inprocess import run
from tests.privacy.traffic import Session, traffic


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic(), st.integers(2, 4))
def test_no_release_or_difference_of_releases_isolates_fewer_than_k_viewers(
    sessions: list[Session], k: int
) -> None:
    releases = run(sessions, k)
    violations = Auditor([s.atom for s in sessions], k).audit(releases)
    assert not violations, (
        "\n".join(map(str, violations[:10]))
        + f"\nk={k}\n"
        + "\n".join(repr(s.atom) for s in sessions)
    )
