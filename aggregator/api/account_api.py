"""Account deletion and API tokens: the customer's DELETE /v1/account, the admin API, the CLI.

Admin API (admin token):
    GET    /v1/admin/accounts                                       every account
    PATCH  /v1/admin/accounts/{account_id}                          change it (audited)
    DELETE /v1/admin/accounts/{account_id}                          purge; the receipt
    POST   /v1/admin/accounts/{account_id}/tokens                   new token (shown once)
    GET    /v1/admin/accounts/{account_id}/tokens                   prefixes, never hashes
    POST   /v1/admin/accounts/{account_id}/tokens/{token_id}/rotate new token, old revoked
    DELETE /v1/admin/accounts/{account_id}/tokens/{token_id}        revoke
Customer API (the account's API token):
    DELETE /v1/account                                              purge own account
    GET    /v1/audit                                                its audit log (audit.py)

CLI: ``streamtally tokens create|list|rotate|revoke --account-id ID [--token-id T]`` and,
hooked into the ``accounts`` group by :func:`add_accounts_cli`, ``accounts update|delete|list``
(``delete`` asks for the account id first, unless ``--yes``).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from typing import Any

import orjson
from aiohttp import web

from aggregator.api import audit
from aggregator.api.admin import json_body, privacy_json
from aggregator.api.auth import ACCOUNT_STORE, require_account, require_admin
from aggregator.api.params import iso
from aggregator.purge import get_purger
from aggregator.service import SERVICE
from aggregator.storage.accounts_store import utc_today
from collector.accounts import Account
from collector.errors import Gone, NotFound, StorageError

routes = web.RouteTableDef()
routes.get("/v1/audit")(audit.get_audit)  # the audit module has no route table of its own


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _live_account_id(request: web.Request) -> str:
    """The path's account, which must exist and not be deleted (404 / 410)."""
    account_id = request.match_info["account_id"]
    account = request.app[ACCOUNT_STORE].by_id(account_id)
    if account is None:
        raise NotFound("no such account", key="account_id")
    if account.deleted:
        raise Gone("the account is deleted", key="account_id")
    return account_id


# ---- deletion ---------------------------------------------------------------------------------


@routes.delete("/v1/account")
async def delete_own_account(request: web.Request) -> web.Response:
    """Delete the caller's account and every row of it; answers the purge receipt."""
    account = await require_account(request)
    receipt = await get_purger(request.app).purge(account.account_id, audit.actor_of(request))
    return _json(receipt)


@routes.delete("/v1/admin/accounts/{account_id}")
async def delete_account(request: web.Request) -> web.Response:
    """Delete an account (admin); deleting it again answers the same receipt."""
    require_admin(request)
    account_id = request.match_info["account_id"]
    receipt = await get_purger(request.app).purge(account_id, "admin")
    return _json(receipt)


def k_pending(next_k: int, next_k_from: date | None, today: date) -> dict[str, Any] | None:
    """The changed k still to come, or None (none, or its day has come)."""
    if not next_k or next_k_from is None or next_k_from <= today:
        return None
    return {"k": next_k, "from": next_k_from.isoformat()}


def account_json(account: Account, today: date) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "name": account.name,
        "embed_key": None if account.deleted else account.embed_key,
        "origins": list(account.origins),
        "streams": list(account.streams),
        "stream_patterns": list(account.stream_patterns),
        "k": account.k_on(today),
        "k_pending": k_pending(account.next_k, account.next_k_from, today),
        "retention_days": account.retention_days,
        "deleted": account.deleted,
    }


@routes.patch("/v1/admin/accounts/{account_id}")
async def update_account(request: web.Request) -> web.Response:
    """Change name, origins, retention, declared streams now; k from the next UTC day."""
    require_admin(request)
    data = await json_body(request)
    account_id = request.match_info["account_id"]
    store = request.app[ACCOUNT_STORE]
    before = store.by_id(account_id)
    today = utc_today()
    account, summary = await store.update(account_id, today=today, **data)
    try:
        await audit.record(request, account_id, "account.update", summary)
    except StorageError:  # not on record: put the account back as it was
        if before is not None:
            await store.restore(before)
        raise
    return _json(account_json(account, today))


@routes.get("/v1/admin/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    """Every account, deleted ones as tombstones (no name, origins, streams or embed key)."""
    require_admin(request)
    rows = await request.app[SERVICE].store.query_dicts(
        "SELECT account_id, name, embed_key, origins, streams, stream_patterns, k, next_k, "
        "next_k_from, retention_days, deleted, created_at FROM accounts FINAL "
        "ORDER BY created_at, account_id"
    )
    today = utc_today()
    accounts = [
        {
            "account_id": r["account_id"],
            "name": r["name"],
            "embed_key": None if r["deleted"] else r["embed_key"],
            "origins": list(r["origins"]),
            "streams": list(r["streams"]),
            "stream_patterns": list(r["stream_patterns"]),
            "k": int(r["next_k"]) if r["next_k"] and r["next_k_from"] <= today else int(r["k"]),
            "k_pending": k_pending(int(r["next_k"]), r["next_k_from"], today),
            "retention_days": int(r["retention_days"]),
            "deleted": bool(r["deleted"]),
            "created_at": iso(r["created_at"], "milliseconds"),
            "privacy": _privacy(request, r["account_id"]),
        }
        for r in rows
    ]
    return _json({"accounts": accounts})


def _privacy(request: web.Request, account_id: str) -> dict[str, Any]:
    account = request.app[ACCOUNT_STORE].by_id(account_id)
    return privacy_json(account) if account is not None else {"mode": "k"}


# ---- tokens -----------------------------------------------------------------------------------


@routes.post("/v1/admin/accounts/{account_id}/tokens")
async def create_token(request: web.Request) -> web.Response:
    """A new API token; the plaintext is in this answer only."""
    require_admin(request)
    account_id = _live_account_id(request)
    store = request.app[ACCOUNT_STORE]
    info, plaintext = await store.create_token(account_id)
    try:
        await audit.record(
            request, account_id, "token.create", {"token_id": info.token_id, "prefix": info.prefix}
        )
    except StorageError:  # not on record: the token must not stay valid unseen
        await store.revoke_token(account_id, info.token_id)
        raise
    return _json({"account_id": account_id, **info.as_json(), "api_token": plaintext}, 201)


@routes.get("/v1/admin/accounts/{account_id}/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    require_admin(request)
    account_id = _live_account_id(request)
    tokens = await request.app[ACCOUNT_STORE].list_tokens(account_id)
    return _json({"account_id": account_id, "tokens": [t.as_json() for t in tokens]})


@routes.post("/v1/admin/accounts/{account_id}/tokens/{token_id}/rotate")
async def rotate_token(request: web.Request) -> web.Response:
    """A new token in place of a live one, which is revoked."""
    require_admin(request)
    account_id = _live_account_id(request)
    old = request.match_info["token_id"]
    info, plaintext = await request.app[ACCOUNT_STORE].rotate_token(account_id, old)
    await audit.record(
        request,
        account_id,
        "token.rotate",
        {"revoked_token_id": old, "token_id": info.token_id, "prefix": info.prefix},
    )
    body = {"account_id": account_id, **info.as_json(), "api_token": plaintext}
    body["revoked_token_id"] = old
    return _json(body, 201)


@routes.delete("/v1/admin/accounts/{account_id}/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    require_admin(request)
    account_id = _live_account_id(request)
    info = await request.app[ACCOUNT_STORE].revoke_token(account_id, request.match_info["token_id"])
    await audit.record(
        request, account_id, "token.revoke", {"token_id": info.token_id, "prefix": info.prefix}
    )
    return _json({"account_id": account_id, **info.as_json()})


# ---- CLI --------------------------------------------------------------------------------------


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=os.environ.get("STREAMTALLY_SERVER"))
    parser.add_argument("--admin-token", help="admin token (env STREAMTALLY_ADMIN_TOKEN)")


def _call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> int:
    from aggregator.client import DEFAULT_SERVER, admin_token, print_result, request

    server = (args.server or DEFAULT_SERVER).rstrip("/")
    status, result = request(method, server + path, admin_token(args), body)
    return print_result(status, result)


def cmd_tokens(args: argparse.Namespace) -> int:
    base = f"/v1/admin/accounts/{args.account_id}/tokens"
    command: str = args.tokens_command
    if command == "create":
        return _call(args, "POST", base)
    if command == "list":
        return _call(args, "GET", base)
    if command == "rotate":
        return _call(args, "POST", f"{base}/{args.token_id}/rotate")
    return _call(args, "DELETE", f"{base}/{args.token_id}")


def cmd_accounts_update(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.name is not None:
        body["name"] = args.name
    if args.origin is not None:
        body["origins"] = args.origin
    for key, flag_values, cleared in (
        ("streams", args.stream, args.no_streams),
        ("stream_patterns", args.stream_pattern, args.no_stream_patterns),
    ):
        if cleared:
            body[key] = []
        elif flag_values is not None:
            body[key] = flag_values
    if args.k is not None:
        body["k"] = args.k
    if args.retention_days is not None:
        body["retention_days"] = args.retention_days
    if not body:
        print(
            "streamtally: nothing to change: give --name, --origin, --k, --retention-days, "
            "--stream, --stream-pattern, --no-streams or --no-stream-patterns",
            file=sys.stderr,
        )
        return 2
    return _call(args, "PATCH", f"/v1/admin/accounts/{args.account_id}", body)


def _confirmed(account_id: str) -> bool:
    """Ask for the account id on standard input; only that answer deletes."""
    print(
        f"Delete account {account_id} and purge all its data? This cannot be undone.\n"
        f"Type the account id ({account_id}) to confirm: ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    answer = sys.stdin.readline()
    if not answer:
        print(
            "\nstreamtally: no answer (standard input is closed): not deleted; "
            "pass --yes to delete without asking",
            file=sys.stderr,
        )
        return False
    if answer.strip() != account_id:
        print("streamtally: the answer was not the account id: not deleted", file=sys.stderr)
        return False
    return True


def cmd_accounts_delete(args: argparse.Namespace) -> int:
    if not args.yes and not _confirmed(args.account_id):
        return 1
    return _call(args, "DELETE", f"/v1/admin/accounts/{args.account_id}")


def cmd_accounts_list(args: argparse.Namespace) -> int:
    return _call(args, "GET", "/v1/admin/accounts")


def add_cli(subparsers: Any) -> None:
    """``streamtally tokens create|list|rotate|revoke --account-id ID [--token-id T]``."""
    tokens = subparsers.add_parser("tokens", help="manage an account's API tokens")
    sub = tokens.add_subparsers(dest="tokens_command", required=True)
    for name, text, needs_token in (
        ("create", "create a token (printed once)", False),
        ("list", "list tokens (prefixes only)", False),
        ("rotate", "replace a token by a new one", True),
        ("revoke", "revoke a token", True),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--account-id", required=True)
        if needs_token:
            p.add_argument("--token-id", required=True)
        _client_flags(p)
        p.set_defaults(func=cmd_tokens)


def add_accounts_cli(accounts_subparsers: Any) -> None:
    """``streamtally accounts update|delete --account-id ID`` and ``accounts list``."""
    update = accounts_subparsers.add_parser(
        "update",
        help="change an account's name, origins, k (from the next UTC day), retention or "
        "declared streams",
        description="Change an account. Only the fields given change; --origin, --stream and "
        "--stream-pattern replace the whole list. A new k takes effect from the next UTC day, "
        "so that no window mixes two k. The change is written to the account's audit log.",
    )
    update.add_argument("--account-id", required=True)
    update.add_argument("--name", help="the account's new name")
    update.add_argument(
        "--origin", action="append", help="allowed page origin (repeat; replaces the list)"
    )
    update.add_argument("--k", type=int, help="k-anonymity threshold (>= 2), from tomorrow (UTC)")
    update.add_argument(
        "--retention-days", type=int, help="days aggregates written from now on are kept"
    )
    update.add_argument(
        "--stream", action="append", help="declared stream name (repeat; replaces the list)"
    )
    update.add_argument(
        "--stream-pattern",
        action="append",
        help="declared stream names as a glob, e.g. 'match-*' (repeat; replaces the list)",
    )
    update.add_argument("--no-streams", action="store_true", help="declare no stream names")
    update.add_argument(
        "--no-stream-patterns", action="store_true", help="declare no stream patterns"
    )
    _client_flags(update)
    update.set_defaults(func=cmd_accounts_update)
    delete = accounts_subparsers.add_parser(
        "delete",
        help="delete an account and purge all its data (asks first; prints the receipt)",
    )
    delete.add_argument("--account-id", required=True)
    delete.add_argument(
        "--yes", action="store_true", help="do not ask for the account id before deleting"
    )
    _client_flags(delete)
    delete.set_defaults(func=cmd_accounts_delete)
    listing = accounts_subparsers.add_parser("list", help="list accounts")
    _client_flags(listing)
    listing.set_defaults(func=cmd_accounts_list)
