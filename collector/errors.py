"""StreamTally's errors.

    StreamTallyError
    ├── ConfigError              a setting is missing or invalid; names the setting
    ├── StorageError             ClickHouse could not be reached or refused a statement
    └── HTTPProblem              answered as an RFC 9457 problem body; carries its status
        ├── BadRequest           400 malformed report or parameter; says which line and key
        ├── Unauthorized         401 missing or wrong token
        ├── Forbidden            403 origin not allowed / token of another account
        ├── NotFound             404 unknown embed key or resource
        ├── Gone                 410 account deleted: players stop sending
        ├── PayloadTooLarge      413 body over the limit
        ├── UnsupportedMediaType 415 wrong Content-Type
        ├── Replayed             422 sealed body seen before within the replay window
        ├── RateLimited          429 too many reports; carries Retry-After
        └── Overloaded           503 cannot accept now (spool full, shutting down)

Messages never contain an IP address, user agent, session id, key or report body:
they name the setting, line, key or limit that is wrong, nothing about the sender.
"""

from __future__ import annotations

from typing import Any, ClassVar


class StreamTallyError(Exception):
    """Base of every error StreamTally raises on purpose."""


class ConfigError(StreamTallyError):
    """A setting is missing or invalid. The message starts with the setting's name."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class StorageError(StreamTallyError):
    """ClickHouse could not be reached, or refused a statement."""


class HTTPProblem(StreamTallyError):
    """An error answered to an HTTP client as an RFC 9457 problem document."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    reason: ClassVar[str] = "internal"  # fixed label for streamtally_reports_rejected_total

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://streamtally.dev/problems/{self.reason}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(HTTPProblem):
    status = 400
    title = "Bad Request"
    reason = "malformed"


class Unauthorized(HTTPProblem):
    status = 401
    title = "Unauthorized"
    reason = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="streamtally"'}


class Forbidden(HTTPProblem):
    status = 403
    title = "Forbidden"
    reason = "origin"


class NotFound(HTTPProblem):
    status = 404
    title = "Not Found"
    reason = "unknown_key"


class Gone(HTTPProblem):
    status = 410
    title = "Gone"
    reason = "deleted"


class PayloadTooLarge(HTTPProblem):
    status = 413
    title = "Payload Too Large"
    reason = "too_large"


class UnsupportedMediaType(HTTPProblem):
    status = 415
    title = "Unsupported Media Type"
    reason = "content_type"


class Replayed(HTTPProblem):
    status = 422
    title = "Unprocessable Content"
    reason = "replayed"


class RateLimited(HTTPProblem):
    status = 429
    title = "Too Many Requests"
    reason = "rate_limited"

    def __init__(self, detail: str, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Overloaded(HTTPProblem):
    status = 503
    title = "Service Unavailable"
    reason = "overloaded"

    def __init__(self, detail: str, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
