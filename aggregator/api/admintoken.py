"""The operator's admin token: given or generated once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

FILE_NAME = "admin-token.sha256"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AdminToken:
    def __init__(self, digest: str) -> None:
        self._digest = digest

    def __repr__(self) -> str:
        return "AdminToken(***)"

    @classmethod
    def setup(cls, data_dir: Path, given: str | None) -> tuple[AdminToken, str | None]:
        """Use the given token, else the stored hash, else generate one.

        Returns the token and, only when it was generated now, its plaintext (to print once).
        """
        path = data_dir / FILE_NAME
        data_dir.mkdir(parents=True, exist_ok=True)
        generated: str | None = None
        if given:
            digest = _hash(given)
        elif path.exists():
            return cls(path.read_text().strip()), None
        else:
            generated = "sta_" + secrets.token_urlsafe(32)
            digest = _hash(generated)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(digest + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return cls(digest), generated

    def verify(self, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(_hash(presented), self._digest)
