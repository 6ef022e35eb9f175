"""Bearer-token checks for the admin API and the customer API."""

from __future__ import annotations

from aiohttp import web

from aggregator.api.admintoken import AdminToken
from aggregator.storage.accounts_store import AccountStore
from collector.accounts import Account
from collector.errors import Unauthorized

ADMIN_TOKEN = web.AppKey("admin_token", AdminToken)
ACCOUNT_STORE = web.AppKey("account_store", AccountStore)


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_admin(request: web.Request) -> None:
    token = bearer(request)
    if token is None:
        raise Unauthorized("an admin token is required: Authorization: Bearer <admin token>")
    if not request.app[ADMIN_TOKEN].verify(token):
        raise Unauthorized(
            "the admin token was not accepted: it is not the server's admin token (the one "
            "given with --admin-token / STREAMTALLY_ADMIN_TOKEN, or printed at first start)"
        )


async def require_account(request: web.Request) -> Account:
    token = bearer(request)
    if token is None:
        raise Unauthorized("an API token is required: Authorization: Bearer <api token>")
    account = await request.app[ACCOUNT_STORE].verify_token(token)
    if account is None or account.deleted:
        raise Unauthorized(
            "the API token was not accepted: unknown, revoked, or of a deleted account"
        )
    return account
