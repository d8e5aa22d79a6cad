"""The `agentchat-mcp` command: serve (default), demo, accounts, database and schema chores.

stdout is the MCP protocol under `serve --transport stdio`: everything else logs to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from agentchat_mcp import __version__
from agentchat_mcp.settings import Settings

if TYPE_CHECKING:
    from agentchat_mcp.store import Store

Handler = Callable[[argparse.Namespace, Settings], int]


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "db", None):
        overrides["db"] = Path(args.db)
    return Settings(**overrides)


def _run(coro: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return anyio.run(coro)


def _open_store(settings: Settings, *, upgrade: bool = True) -> AbstractAsyncContextManager[Store]:
    """store.open_settings_store, imported where used like the CLI's other modules."""
    from agentchat_mcp.store import open_settings_store

    return open_settings_store(settings, upgrade=upgrade)


# --- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from agentchat_mcp.server import build_server, settle_startup_heap

    if args.transport == "stdio":
        server = build_server(settings)
        settle_startup_heap()
        server.run("stdio")
        return 0
    from agentchat_mcp import http

    return int(http.serve(settings, args))


# --- accounts ---------------------------------------------------------------------------------


def _price_cents(text: str) -> int:
    from agentchat_mcp.money import to_cents

    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SystemExit(f"--peek-price must be a number like 2.50, not {text!r}") from None
    cents = to_cents(value)
    if not 50 <= cents <= 50_000:
        raise SystemExit("--peek-price must be between 0.50 and 500.00")
    return cents


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from agentchat_mcp import server_secret
    from agentchat_mcp.errors import AgentChatError
    from agentchat_mcp.services.identity import Identity

    role = args.role

    async def create() -> int:
        async with _open_store(settings) as store:
            identity = Identity(store, server_secret.load_keyring(settings.resolved_secret_file()))
            try:
                principal, api_key = await identity.register(
                    role,
                    args.name,
                    description=getattr(args, "description", "") or "",
                    peek_price_cents=_price_cents(args.peek_price) if role == "agent" else None,
                    can_refuse=not getattr(args, "no_refuse", False) if role == "agent" else None,
                    tags=getattr(args, "tag", None),
                )
            except AgentChatError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        print(json.dumps({"id": principal.id, "role": role, "name": principal.name, "api_key": api_key}, indent=2))
        print("The API key is shown only this once; store it (e.g. as AGENTCHAT_API_KEY).", file=sys.stderr)
        return 0

    return _run(create)


def cmd_invite(args: argparse.Namespace, settings: Settings) -> int:
    """invite create: an invitation code for registration = invite hubs, printed once."""
    from datetime import timedelta

    from agentchat_mcp import server_secret
    from agentchat_mcp.errors import AgentChatError
    from agentchat_mcp.services.identity import MAX_INVITE_LIFETIME, MAX_INVITE_USES, Identity

    if not 1 <= args.uses <= MAX_INVITE_USES:
        print(f"error: --uses must be a whole number from 1 to {MAX_INVITE_USES}, not {args.uses}", file=sys.stderr)
        return 2
    if not 0 < args.expires_in_days <= MAX_INVITE_LIFETIME.days:  # also refuses nan
        print(
            f"error: --expires-in-days must be more than 0 and at most {MAX_INVITE_LIFETIME.days}, "
            f"not {args.expires_in_days}",
            file=sys.stderr,
        )
        return 2

    async def create() -> int:
        async with _open_store(settings) as store:
            identity = Identity(store, server_secret.load_keyring(settings.resolved_secret_file()))
            try:
                invite = await identity.create_invite(
                    args.role, args.uses, timedelta(days=args.expires_in_days), created_by="cli"
                )
            except AgentChatError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        printed = {"id": invite.id, "role": invite.role, "uses": invite.uses, "expires_at": invite.expires_at}
        print(json.dumps({**printed, "code": invite.code}, indent=2))
        print(
            "The invitation code is shown only this once; give it to whoever should register "
            "(the invite_code argument of register_agent / register_user).",
            file=sys.stderr,
        )
        return 0

    return _run(create)


# --- database ---------------------------------------------------------------------------------


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    import sqlite3

    from agentchat_mcp.store import migrations

    async def run() -> int:
        upgrade = args.db_command == "upgrade"
        async with _open_store(settings, upgrade=upgrade) as store:
            if args.db_command == "backup":
                try:
                    await store.backup(Path(args.path))
                except (OSError, sqlite3.Error) as exc:
                    print(f"error: could not back up to {args.path}: {exc}", file=sys.stderr)
                    return 1
                print(f"backed up {store.path} to {Path(args.path).resolve()}")
                return 0
            current = await migrations.current_revision(store)
            head = migrations.head_revision()
            print(json.dumps({"db": str(store.path), "revision": current, "head": head, "up_to_date": current == head}))
            return 0

    return _run(run)


# --- server secret ----------------------------------------------------------------------------


def cmd_secrets(args: argparse.Namespace, settings: Settings) -> int:
    """rotate: add a new newest server secret; status: versions in use; prune: drop unused ones."""
    from agentchat_mcp import server_secret
    from agentchat_mcp.services.identity import Identity

    path = settings.resolved_secret_file()
    if args.secrets_command == "rotate":
        keyring = server_secret.rotate(path)
        print(json.dumps({"secret_file": str(path), "current_version": keyring.current_version}))
        print(
            f"Rotated: new API-key hashes use version {keyring.current_version}; every existing key keeps working "
            "and moves to it at its next sign-in. Restart servers at your pace; see `secrets status`.",
            file=sys.stderr,
        )
        return 0

    async def run() -> int:
        async with _open_store(settings) as store:
            identity = Identity(store, server_secret.load_keyring(path))
            in_use = await identity.hash_versions()
            invited = await identity.invite_hash_versions()
        keyring = server_secret.load_keyring(path)
        if args.secrets_command == "prune":  # a version still hashing a key or a live invitation stays
            keyring, dropped = server_secret.prune(path, set(in_use) | set(invited))
            print(json.dumps({"secret_file": str(path), "dropped_versions": dropped}))
            return 0
        versions = [
            {
                "version": v,
                "fingerprint": keyring.fingerprint(v),
                "principals": in_use.get(v, 0),
                "live_invites": invited.get(v, 0),
            }
            for v, _ in keyring.versions
        ]
        unknown = sorted(set(in_use) - {v for v, _ in keyring.versions})
        summary = {
            "secret_file": str(path),
            "current_version": keyring.current_version,
            "versions": versions,
            "principals_with_unknown_version": sum(in_use[v] for v in unknown),
        }
        print(json.dumps(summary))
        return 0

    return _run(run)


# --- credits ----------------------------------------------------------------------------------


async def grant_credits_offline(
    settings: Settings, user_id: str, amount_cents: int, *, memo: str = "", idempotency_key: str | None = None
) -> Any:
    """Grant peek credit straight into the ledger of the database in `settings` (operator action)."""
    from agentchat_mcp.server import build_app_context
    from agentchat_mcp.telemetry import Telemetry

    async with _open_store(settings) as store:
        app = build_app_context(settings, store, Telemetry())
        return await app.earnings.grant(
            user_id,
            amount_cents,
            memo=memo or "granted with agentchat-mcp credits grant",
            idempotency_key=idempotency_key,
        )


def cmd_credits(args: argparse.Namespace, settings: Settings) -> int:
    """credits grant USER AMOUNT: the ledger provider's way to put money in (no Stripe needed)."""
    from agentchat_mcp.errors import AgentChatError
    from agentchat_mcp.money import fmt, to_cents

    try:
        cents = to_cents(Decimal(args.amount))
    except (InvalidOperation, AgentChatError):
        print(f"error: AMOUNT must be USD like 25.00, not {args.amount!r}", file=sys.stderr)
        return 2

    async def run() -> int:
        try:
            grant = await grant_credits_offline(
                settings, args.user, cents, memo=args.memo, idempotency_key=args.idempotency_key
            )
        except AgentChatError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            json.dumps(
                {
                    "user_id": grant.user_id,
                    "granted": fmt(grant.amount_cents),
                    "balance": fmt(grant.balance_cents),
                    "entry_id": grant.entry_id,
                    "replayed": grant.replayed,
                }
            )
        )
        return 0

    return _run(run)


# --- payouts ----------------------------------------------------------------------------------


def cmd_payouts(args: argparse.Namespace, settings: Settings) -> int:
    """payouts run [--batch ID]: pay pending/failed Stripe payouts as one batch, or re-run a batch."""
    from agentchat_mcp.errors import AgentChatError
    from agentchat_mcp.money import fmt
    from agentchat_mcp.server import build_app_context
    from agentchat_mcp.telemetry import Telemetry

    async def run() -> int:
        async with _open_store(settings) as store:
            app = build_app_context(settings, store, Telemetry())
            assert app.payments is not None
            try:
                batch = await app.payments.run_payout_batch(args.batch, min_age_seconds=args.min_age)
            except AgentChatError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            finally:
                await app.payments.provider.aclose()
        if batch is None:
            print(json.dumps({"batch": None, "note": "nothing to pay"}))
            return 0
        shown = {"batch": batch.id, "status": batch.status, "paid": batch.paid, "unpaid": batch.unpaid}
        print(json.dumps({**shown, "total": fmt(batch.total_cents), "errors": list(batch.errors)}))
        return 0 if batch.status == "paid" else 1

    return _run(run)


# --- schemas and demo -------------------------------------------------------------------------


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from agentchat_mcp.contract import export_schemas

    written = export_schemas(Path(args.out))
    print(f"wrote {written} schema files to {Path(args.out).resolve()}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from agentchat_mcp.demo import run_demo

    return _run(lambda: run_demo(keep=args.keep))


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentchat-mcp", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"agentchat-mcp {__version__}")
    parser.add_argument("--db", help="SQLite database file (default: AGENTCHAT_DB or the user data folder)")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the MCP server (default: stdio)")
    serve.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--allowed-host", action="append", default=[], help="extra Host header value to accept")
    serve.add_argument("--allowed-origin", action="append", default=[], help="extra Origin to accept")
    serve.add_argument("--behind-tls", action="store_true", help="send HSTS (a TLS proxy is in front)")
    serve.add_argument(
        "--registration",
        choices=["open", "invite", "closed"],
        help="who may register over this server (default: AGENTCHAT_REGISTRATION, else open)",
    )
    serve.add_argument("--max-body-bytes", type=int, help="largest HTTP request body accepted (default 1 MiB)")
    serve.add_argument("--stateless", action="store_true", help="HTTP: no sessions (for several replicas)")
    serve.add_argument("--shutdown-grace", type=float, help="seconds in-flight HTTP calls get on SIGTERM (default 10)")
    serve.set_defaults(handler=cmd_serve)

    demo = sub.add_parser("demo", help="run two agents end to end on a temp database and print the transcript")
    demo.add_argument("--keep", action="store_true", help="keep the temp database and logs afterwards")
    demo.set_defaults(handler=cmd_demo)

    for role in ("agent", "user", "admin"):
        group = sub.add_parser(role, help=f"manage {role} accounts")
        actions = group.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help=f"create a {role}; prints its id and API key once")
        create.add_argument("--name", required=True)
        if role == "agent":
            create.add_argument("--description", default="")
            create.add_argument("--peek-price", default="1.00", help="USD per peek, 0.50-500.00")
            create.add_argument("--no-refuse", action="store_true", help="standing consent to every paid peek")
            create.add_argument("--tag", action="append")
        create.set_defaults(handler=cmd_create, role=role)

    invite = sub.add_parser("invite", help="invitation codes, for registration = invite")
    invite_actions = invite.add_subparsers(dest="invite_command", required=True)
    invite_create = invite_actions.add_parser("create", help="create an invitation code; prints it once")
    invite_create.add_argument("--role", choices=["agent", "user"], default="agent", help="what it registers")
    invite_create.add_argument("--uses", type=int, default=1, help="how many registrations it admits (default 1)")
    invite_create.add_argument(
        "--expires-in-days", type=float, default=7.0, help="how long it stays valid, in days (default 7)"
    )
    invite_create.set_defaults(handler=cmd_invite)

    db = sub.add_parser("db", help="database chores")
    db_actions = db.add_subparsers(dest="db_command", required=True)
    db_actions.add_parser("upgrade", help="migrate the database to the newest schema").set_defaults(handler=cmd_db)
    db_actions.add_parser("status", help="show the schema revision").set_defaults(handler=cmd_db)
    backup = db_actions.add_parser("backup", help="online backup to PATH")
    backup.add_argument("path")
    backup.set_defaults(handler=cmd_db)

    secrets = sub.add_parser("secrets", help="the server secret that keys API-key hashes")
    secret_actions = secrets.add_subparsers(dest="secrets_command", required=True)
    secret_actions.add_parser(
        "rotate", help="add a new server secret; existing API keys keep working and move to it as they sign in"
    ).set_defaults(handler=cmd_secrets)
    secret_actions.add_parser("status", help="secret versions and how many principals use each").set_defaults(
        handler=cmd_secrets
    )
    secret_actions.add_parser("prune", help="drop old secret versions no principal uses any more").set_defaults(
        handler=cmd_secrets
    )

    credits = sub.add_parser("credits", help="peek credit in the ledger (ledger payments provider)")
    credit_actions = credits.add_subparsers(dest="credits_command", required=True)
    grant = credit_actions.add_parser("grant", help="give a user peek credit, e.g. credits grant usr_... 25.00")
    grant.add_argument("user", help="the user id (usr_...)")
    grant.add_argument("amount", help="USD, e.g. 25.00")
    grant.add_argument("--memo", default="", help="a note stored with the ledger entry")
    grant.add_argument("--idempotency-key", help="repeat-safe: the same key grants only once")
    grant.set_defaults(handler=cmd_credits)

    payouts = sub.add_parser("payouts", help="Stripe Connect payouts (stripe payments provider)")
    payout_actions = payouts.add_subparsers(dest="payouts_command", required=True)
    run_batch = payout_actions.add_parser(
        "run", help="pay pending and failed payouts as one batch (or re-run --batch ID); safe to repeat"
    )
    run_batch.add_argument("--batch", default=None, help="re-send the unpaid payouts of this batch (pob_...)")
    run_batch.add_argument("--min-age", type=float, default=60.0, help="skip payouts younger than this (s)")
    run_batch.set_defaults(handler=cmd_payouts)

    schemas = sub.add_parser("schemas", help="the tool contract")
    schema_actions = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schema_actions.add_parser("export", help="write schemas/*.json from the code")
    export.add_argument("--out", default="schemas")
    export.set_defaults(handler=cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `agentchat-mcp` console script."""
    from agentchat_mcp import logs
    from agentchat_mcp.store.migrations import MigrationFailed

    logs.configure("WARNING")  # JSON lines on stderr: stdout is the stdio protocol
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `agentchat-mcp` is `serve --transport stdio`
        args = parser.parse_args([*(argv or sys.argv[1:]), "serve"])
    settings = _settings(args)
    logs.configure(settings.log_level, access_log=settings.access_log)
    if args.handler in (cmd_serve, cmd_create, cmd_invite):
        _check_secret_file(settings)
    code = 2
    try:
        code = args.handler(args, settings)
    except* MigrationFailed as failed:  # a server's lifespan raises it inside a task group
        for exc in failed.exceptions:
            print(f"error: {exc}", file=sys.stderr)
    sys.exit(code)


def _check_secret_file(settings: Settings) -> None:
    """Fail before starting, with one plain line, on a secret file others can read or that is damaged.

    Inside the server such an error surfaces as a traceback from its lifespan, and nothing else
    may be written to stdout under stdio.
    """
    from agentchat_mcp import server_secret

    try:
        server_secret.load_keyring(settings.resolved_secret_file())
    except (PermissionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
