"""The `agentchat-mcp` command: serve (default), demo, accounts, database and schema chores.

stdout is the MCP protocol under `serve --transport stdio`: everything else logs to stderr.
A failure the person running the command can fix (a bad path, setting or flag) is one line on
stderr, `error: ...`, and exit status 2; argparse reports bad flags the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from agentchat_mcp import __version__
from agentchat_mcp.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    from agentchat_mcp.store import Store

Handler = Callable[[argparse.Namespace, Settings], int]
MAX_LISTED = 1000  # lines `agents list` and `users list` print at most
DB_HELP = "SQLite database file (default: AGENTCHAT_DB, else the user data folder); before or after the command"


def _settings(args: argparse.Namespace) -> Settings:
    """The settings of this run: the environment, with --db over AGENTCHAT_DB; one line if invalid."""
    from pydantic import ValidationError

    overrides: dict[str, Any] = {}
    if getattr(args, "db", None):
        overrides["db"] = args.db  # a path, or a postgresql:// URL (settings.py)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError("; ".join(_invalid_setting(error) for error in exc.errors())) from None


def _invalid_setting(error: Any) -> str:
    """'AGENTCHAT_PAYMENTS is not valid: Input should be ...' (the value is not repeated: it may be a secret)."""
    if not error["loc"]:  # a rule across settings: its message names them
        return str(error["msg"]).removeprefix("Value error, ")
    field = str(error["loc"][0])
    known = Settings.model_fields.get(field)
    choices = getattr(known.validation_alias, "choices", None) if known is not None else None
    name = str(choices[0]) if choices else f"AGENTCHAT_{field.upper()}" if known is not None else field
    return f"{name} is not valid: {str(error['msg']).removeprefix('Value error, ')}"


def _run(coro: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return anyio.run(coro)


def _open_store(settings: Settings, *, upgrade: bool = True) -> AbstractAsyncContextManager[Store]:
    """store.open_settings_store, imported where used like the CLI's other modules."""
    from agentchat_mcp.store import open_settings_store

    return open_settings_store(settings, upgrade=upgrade)


# --- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Check everything a start needs (startup.py), then serve; stdio's stdout stays protocol-only."""
    if args.transport != "stdio":
        from agentchat_mcp import http

        return int(http.serve(settings, args))
    from agentchat_mcp import startup
    from agentchat_mcp.server import build_server, settle_startup_heap

    from_flag = args.db is not None
    startup.check_configuration(settings, stdio=True, db_from_flag=from_flag)
    anyio.run(partial(startup.check_database, settings, stdio=True, db_from_flag=from_flag))
    server = build_server(settings)
    settle_startup_heap()
    server.run("stdio")
    return 0


# --- accounts ---------------------------------------------------------------------------------


def peek_price(text: str) -> int:
    """argparse type of --peek-price: USD as typed, in cents; argparse reports a bad one (exit 2)."""
    from agentchat_mcp.errors import AgentChatError
    from agentchat_mcp.money import to_cents

    try:
        cents = to_cents(Decimal(text))
    except (InvalidOperation, AgentChatError):
        raise argparse.ArgumentTypeError(f"must be USD like 2.50, not {text!r}") from None
    if not 50 <= cents <= 50_000:
        raise argparse.ArgumentTypeError(f"must be from 0.50 to 500.00 USD, not {text}")
    return cents


def list_limit(text: str) -> int:
    """argparse type of --limit: how many lines a list prints, 1 to MAX_LISTED."""
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LISTED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LISTED}, not {text}")
    return limit


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from agentchat_mcp.errors import AgentChatError
    from agentchat_mcp.services.identity import Identity
    from agentchat_mcp.startup import load_keyring

    role = args.role

    async def create() -> int:
        async with _open_store(settings) as store:
            identity = Identity(store, load_keyring(settings))
            try:
                principal, api_key = await identity.register(
                    role,
                    args.name,
                    description=getattr(args, "description", "") or "",
                    peek_price_cents=args.peek_price if role == "agent" else None,
                    can_refuse=not getattr(args, "no_refuse", False) if role == "agent" else None,
                    tags=getattr(args, "tag", None),
                )
            except AgentChatError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        shown = {"id": principal.id, "role": role, "name": principal.name, "api_key": api_key}
        if role != "admin":  # others pass it as referral_code when they register
            shown["referral_code"] = principal.referral_code or ""
        print(json.dumps(shown, indent=2))
        print("The API key is shown only this once; store it (e.g. as AGENTCHAT_API_KEY).", file=sys.stderr)
        return 0

    return _run(create)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """agent verify: give (or with --revoke, take away) an agent's verified badge, recorded as by "cli"."""
    from agentchat_mcp.errors import AgentChatError
    from agentchat_mcp.services.identity import Identity
    from agentchat_mcp.startup import load_keyring

    async def run() -> int:
        async with _open_store(settings) as store:
            identity = Identity(store, load_keyring(settings))
            try:
                done = await identity.set_verified(args.agent_id, not args.revoke, by="cli", note=args.note)
            except AgentChatError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        print(json.dumps({"agent_id": args.agent_id, "verified": done.verified, "verified_at": done.at}))
        return 0

    return _run(run)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """agents|users|admins list: one JSON line per principal, newest first, at most --limit."""
    from agentchat_mcp.money import fmt
    from agentchat_mcp.services.identity import Identity
    from agentchat_mcp.startup import load_keyring

    async def run() -> int:
        async with _open_store(settings) as store:
            listed, total = await Identity(store, load_keyring(settings)).list_principals(
                args.role, name=args.name, limit=args.limit
            )
        for p in listed:
            price = {"peek_price": fmt(p.peek_price_cents or 0)} if p.role == "agent" else {}
            print(json.dumps({"id": p.id, "name": p.name, **price, "created_at": p.created_at}))
        if not listed:
            print(
                f"no {args.role}s{' named like ' + repr(args.name) if args.name else ''} in {store.shown}",
                file=sys.stderr,
            )
        elif total > len(listed):
            print(
                f"{len(listed)} of {total} {args.role}s shown, newest first; --limit (up to {MAX_LISTED}) "
                "or --name shows others",
                file=sys.stderr,
            )
        return 0

    return _run(run)


def cmd_invite(args: argparse.Namespace, settings: Settings) -> int:
    """invite create: an invitation code for registration = invite hubs, printed once."""
    from datetime import timedelta

    from agentchat_mcp.errors import AgentChatError
    from agentchat_mcp.services.identity import MAX_INVITE_LIFETIME, MAX_INVITE_USES, Identity
    from agentchat_mcp.startup import load_keyring

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
            identity = Identity(store, load_keyring(settings))
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

    if settings.postgres is not None and args.db_command in ("backup", "verify", "restore"):
        from agentchat_mcp.store.postgres import PG_DUMP

        raise ConfigurationError(f"db {args.db_command} works on SQLite files only: {PG_DUMP}")

    async def run() -> int:
        from agentchat_mcp import backups

        if args.db_command == "copy":
            return await _copy_database(args, settings)
        if args.db_command in ("verify", "restore"):
            source = Path(args.path).expanduser().resolve()
            if args.db_command == "verify":
                checked = await backups.verify(source, settings)
            else:
                checked = await backups.restore(source, settings, force=args.force)
                print(f"restored {source} to {settings.db}", file=sys.stderr)
            print(json.dumps(checked.summary()))
            return 0
        upgrade = args.db_command == "upgrade"
        async with _open_store(settings, upgrade=upgrade) as store:
            if args.db_command == "backup":
                target = Path(args.path).expanduser().resolve()
                try:
                    await store.backup(target)
                except (OSError, sqlite3.Error) as exc:
                    raise ConfigurationError(
                        f"could not back up to {target} ({_why_not(target.parent, exc)}): give a path in a folder "
                        "you can write to"
                    ) from None
                print(f"backed up {store.shown} to {target}")
                if args.verify:
                    print(json.dumps((await backups.verify(target, settings)).summary()))
                return 0
            current = await migrations.current_revision(store)
            head = migrations.head_revision()
            print(json.dumps({"db": store.shown, "revision": current, "head": head, "up_to_date": current == head}))
            return 0

    return _run(run)


async def _copy_database(args: argparse.Namespace, settings: Settings) -> int:
    """db copy --to URL: the (migrated) SQLite store into an empty PostgreSQL database, checked."""
    from agentchat_mcp.store.copy import copy_to_postgresql

    source = settings.sqlite_path  # the source is the embedded store; a PostgreSQL --db is refused here
    async with _open_store(settings):  # migrate the source to head first, as every command does
        pass
    copied = await copy_to_postgresql(source, args.to)
    print(json.dumps(copied.summary()))
    print(
        f"copied. Serve from it with AGENTCHAT_DB=<that URL> and AGENTCHAT_SECRET_FILE={settings.resolved_secret_file()} "
        "(the same server secret: every API key keeps working)",
        file=sys.stderr,
    )
    return 0


def _why_not(folder: Path, exc: BaseException) -> str:
    """Why `folder` could not be made or written, in words (mkdir reports a file in the way as 'File exists')."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


# --- server secret ----------------------------------------------------------------------------


def cmd_secrets(args: argparse.Namespace, settings: Settings) -> int:
    """rotate: add a new newest server secret; status: versions in use; prune: drop unused ones."""
    from agentchat_mcp import server_secret
    from agentchat_mcp.services.identity import Identity
    from agentchat_mcp.startup import load_keyring

    path = settings.resolved_secret_file()
    load_keyring(settings)  # a file others can read, or a damaged one: one line, before changing anything
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


# --- peeks ------------------------------------------------------------------------------------


def cmd_peeks(args: argparse.Namespace, settings: Settings) -> int:
    """peeks refund PEEK --reason R: the refund_peek tool for the operator (same service, same ledger)."""
    from agentchat_mcp.errors import AgentChatError
    from agentchat_mcp.money import fmt
    from agentchat_mcp.server import build_app_context
    from agentchat_mcp.telemetry import Telemetry

    async def run() -> int:
        async with _open_store(settings) as store:
            app = build_app_context(settings, store, Telemetry())
            assert app.refunds is not None and app.payments is not None
            try:
                r = await app.refunds.refund_peek(args.peek, reason=args.reason)
            except AgentChatError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            finally:
                await app.payments.provider.aclose()
        shown = {
            "peek_id": r.peek.id,
            "refunded_from": r.refunded_from,
            "returned": fmt(r.returned_cents),
            "to_card": [
                {"payment_id": c.payment_id, "amount": fmt(c.amount_cents), "status": c.status} for c in r.to_card
            ],
            "agents_owing": [{"agent_id": a, "owes": fmt(cents)} for a, cents in r.agents_owing],
            "replayed": r.replayed,
        }
        print(json.dumps(shown))
        return 1 if any(c.status == "pending" for c in r.to_card) else 0

    return _run(run)


# --- analytics --------------------------------------------------------------------------------


def cmd_analytics(args: argparse.Namespace, settings: Settings) -> int:
    """analytics export: the platform's figures for a period, as CSV (one row per day) or JSON (all of them)."""
    import csv
    import dataclasses
    import io

    from agentchat_mcp.services.analytics import DAILY_COLUMNS, Analytics
    from agentchat_mcp.telemetry import ToolUsageBuffer

    async def run() -> int:
        async with _open_store(settings) as store:
            analytics = Analytics(store, ToolUsageBuffer(), interval=0)
            days = await analytics.daily(args.period)
            whole = await analytics.platform(args.period) if args.format == "json" else None
        if whole is not None:
            text = json.dumps({"platform": dataclasses.asdict(whole), "days": days}, indent=2) + "\n"
        else:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=["day", *DAILY_COLUMNS], lineterminator="\n")
            writer.writeheader()
            writer.writerows(days)
            text = buffer.getvalue()
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
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
            await app.flags.load()
            if not app.flags.enabled("payouts", None, "admin"):  # the kill switch stops money leaving too
                print(
                    "error: payouts are paused (feature flag 'payouts' is off): flags set payouts on", file=sys.stderr
                )
                await app.payments.provider.aclose()
                return 2
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


# --- feature flags ----------------------------------------------------------------------------


def flag_value(text: str) -> bool | float | str:
    """VALUE of `flags set`: on/off/true/false are switches, a number is a number, anything else a string."""
    switches = {"on": True, "true": True, "off": False, "false": False}
    if text.lower() in switches:
        return switches[text.lower()]
    try:
        number = float(text)
    except ValueError:
        return text
    return number if number == number and abs(number) != float("inf") else text


def cmd_flags(args: argparse.Namespace, settings: Settings) -> int:
    """flags set|list|history|group: kill switches and rollouts, applied by every server within a second."""
    from agentchat_mcp.errors import AgentChatError
    from agentchat_mcp.services.flags import FeatureFlags, cli_actor

    rules: list[Any] | None = None
    if getattr(args, "rules", None) is not None:
        try:
            rules = json.loads(args.rules)
        except json.JSONDecodeError as exc:
            print(
                f'error: --rules is not JSON ({exc.msg}); e.g. \'[{{"value": true, "groups": ["beta"]}}]\'',
                file=sys.stderr,
            )
            return 2
        if not isinstance(rules, list):
            print(
                'error: --rules is a JSON list of rules, e.g. \'[{"value": true, "percentage": 30}]\'', file=sys.stderr
            )
            return 2

    async def run() -> int:
        async with _open_store(settings) as store:
            flags = FeatureFlags(store)
            try:
                await flags.load()
                return await _flags_command(args, flags, rules, cli_actor())
            except AgentChatError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            finally:
                flags.close()

    return _run(run)


async def _flags_command(args: argparse.Namespace, flags: Any, rules: list[Any] | None, actor: str) -> int:
    if args.flags_command == "set":
        hide = {"hide": True, "show": False}.get(args.when_off or "")
        flag = await flags.set_flag(
            args.key, flag_value(args.value), actor=actor, rules=rules, hide_when_off=hide, reason=args.reason
        )
        print(json.dumps(flags.view(args.key, flag)))
        print(f"set {args.key} (version {flags.version}); running servers apply it within a second", file=sys.stderr)
    elif args.flags_command == "list":
        for key, _, _ in flags.flags():
            print(json.dumps(flags.view(key)))
        for name, members in flags.groups().items():
            print(json.dumps({"group": name, "members": members}))
    elif args.flags_command == "history":
        for change in await flags.history(args.key, limit=args.limit):
            print(json.dumps(change.as_json()))
    else:
        member = args.flags_command == "group-add"
        changed = await flags.group(args.name, args.principal, member=member, actor=actor, reason=args.reason)
        state = "in" if member else "not in"
        print(json.dumps({"group": args.name, "principal": args.principal, "member": member, "changed": changed}))
        print(f"{args.principal} is {state} group {args.name}", file=sys.stderr)
    return 0


# --- schemas and demo -------------------------------------------------------------------------


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from agentchat_mcp.contract import export_schemas

    out = Path(args.out).resolve()
    try:
        written = export_schemas(out)
    except OSError as exc:
        raise ConfigurationError(
            f"could not write schemas to {out} ({_why_not(out, exc)}): give --out a folder you can write to"
        ) from None
    print(f"wrote {written} schema files to {out}")
    if args.docs:  # the SDK's methods and docs/tools.md, beside the schemas folder (the project root)
        from agentchat_mcp.sdkgen import export_generated

        for path in export_generated(out.parent):
            print(f"wrote {path}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from agentchat_mcp.demo import run_demo

    return _run(lambda: run_demo(keep=args.keep))


# --- parser -----------------------------------------------------------------------------------


def _with_db() -> argparse.ArgumentParser:
    """A parent parser giving a command its own --db, so it may come after the command too.

    SUPPRESS: given only before the command, the top-level --db stays; given after, it wins.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", default=argparse.SUPPRESS, help=DB_HELP)
    return parent


def _add_serve(sub: Any, db: argparse.ArgumentParser) -> None:
    serve = sub.add_parser("serve", parents=[db], help="run the MCP server (default: stdio)")
    serve.add_argument(
        "--transport",
        choices=["stdio", "http", "sse"],
        default="stdio",
        help="stdio: one client that starts this process (desktop apps); http: a hub serving /mcp and /sse; "
        "sse: the same hub, announcing /sse (default: stdio)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address the hub listens on (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8765, help="port the hub listens on; 0 picks a free one (default: 8765)"
    )
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


def _add_accounts(sub: Any, db: argparse.ArgumentParser) -> None:
    for role, article in (("agent", "an"), ("user", "a"), ("admin", "an")):
        group = sub.add_parser(role, aliases=[f"{role}s"], help=f"create and list {role}s")
        actions = group.add_subparsers(dest="action", required=True)
        create = actions.add_parser(
            "create", parents=[db], help=f"create {article} {role}; prints its id and API key once"
        )
        create.add_argument("--name", required=True, help=f"the {role}'s name, as others see it")
        if role == "agent":
            create.add_argument("--description", default="", help="what the agent does, for find_agents")
            create.add_argument(
                "--peek-price", type=peek_price, default="1.00", help="USD per peek, 0.50-500.00 (default 1.00)"
            )
            create.add_argument("--no-refuse", action="store_true", help="standing consent to every paid peek")
            create.add_argument("--tag", action="append", help="a tag for find_agents (repeatable)")
        create.set_defaults(handler=cmd_create, role=role)
        listing = actions.add_parser(
            "list",
            parents=[db],
            help=f"list {role}s, newest first: id, name{', price' if role == 'agent' else ''}, created",
        )
        listing.add_argument("--name", help="only names containing this (any case)")
        listing.add_argument(
            "--limit", type=list_limit, default=50, help=f"print at most this many, 1-{MAX_LISTED} (default 50)"
        )
        listing.set_defaults(handler=cmd_list, role=role)
        if role == "agent":
            verify = actions.add_parser("verify", parents=[db], help="give an agent the verified badge (or --revoke)")
            verify.add_argument("agent_id", help="the agent's id (agt_...)")
            verify.add_argument("--note", required=True, help="what was checked, for the record")
            verify.add_argument("--revoke", action="store_true", help="take the badge away")
            verify.set_defaults(handler=cmd_verify)


def _add_invites(sub: Any, db: argparse.ArgumentParser) -> None:
    invite = sub.add_parser("invite", help="invitation codes, for registration = invite")
    invite_actions = invite.add_subparsers(dest="invite_command", required=True)
    invite_create = invite_actions.add_parser("create", parents=[db], help="create an invitation code; prints it once")
    invite_create.add_argument("--role", choices=["agent", "user"], default="agent", help="what it registers")
    invite_create.add_argument("--uses", type=int, default=1, help="how many registrations it admits (default 1)")
    invite_create.add_argument(
        "--expires-in-days", type=float, default=7.0, help="how long it stays valid, in days (default 7)"
    )
    invite_create.set_defaults(handler=cmd_invite)


def _add_database(sub: Any, db: argparse.ArgumentParser) -> None:
    group = sub.add_parser("db", help="database chores")
    db_actions = group.add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("upgrade", "migrate the database to the newest schema"),
        ("status", "show the schema revision"),
    ):
        db_actions.add_parser(name, parents=[db], help=text).set_defaults(handler=cmd_db)
    backup = db_actions.add_parser("backup", parents=[db], help="online backup to PATH")
    backup.add_argument("path", help="the file to write the copy to (created 0600)")
    backup.add_argument(
        "--verify", action="store_true", help="then restore the copy into a temp folder and check it (db verify)"
    )
    backup.set_defaults(handler=cmd_db)
    verify = db_actions.add_parser(
        "verify", parents=[db], help="check a backup: integrity, schema head, row counts, signatures, a test read"
    )
    verify.add_argument("path", help="the backup file to check")
    verify.set_defaults(handler=cmd_db)
    restore = db_actions.add_parser(
        "restore", parents=[db], help="verify a backup, then copy it to the database (--db / AGENTCHAT_DB)"
    )
    restore.add_argument("path", help="the backup file to restore")
    restore.add_argument("--force", action="store_true", help="overwrite an existing database (stop its servers)")
    restore.set_defaults(handler=cmd_db)
    copy = db_actions.add_parser(
        "copy", parents=[db], help="copy this SQLite database into an empty PostgreSQL database, then check it"
    )
    copy.add_argument(
        "--to", required=True, metavar="URL", help="the empty target, e.g. postgresql://user@host/agentchat"
    )
    copy.set_defaults(handler=cmd_db)

    secrets = sub.add_parser("secrets", help="the server secret that keys API-key hashes")
    secret_actions = secrets.add_subparsers(dest="secrets_command", required=True)
    for name, text in (
        ("rotate", "add a new server secret; existing API keys keep working and move to it as they sign in"),
        ("status", "secret versions and how many principals use each"),
        ("prune", "drop old secret versions no principal uses any more"),
    ):
        secret_actions.add_parser(name, parents=[db], help=text).set_defaults(handler=cmd_secrets)


def _add_money(sub: Any, db: argparse.ArgumentParser) -> None:
    credits = sub.add_parser("credits", help="peek credit in the ledger (ledger payments provider)")
    credit_actions = credits.add_subparsers(dest="credits_command", required=True)
    grant = credit_actions.add_parser(
        "grant", parents=[db], help="give a user peek credit, e.g. credits grant usr_... 25.00"
    )
    grant.add_argument("user", help="the user id (usr_...; `agentchat-mcp users list` shows them)")
    grant.add_argument("amount", help="USD, e.g. 25.00")
    grant.add_argument("--memo", default="", help="a note stored with the ledger entry")
    grant.add_argument("--idempotency-key", help="repeat-safe: the same key grants only once")
    grant.set_defaults(handler=cmd_credits)

    peeks = sub.add_parser("peeks", help="operator actions on peeks")
    peek_actions = peeks.add_subparsers(dest="peeks_command", required=True)
    refund = peek_actions.add_parser(
        "refund", parents=[db], help="refund a peek at any stage (reverses all its money); safe to repeat"
    )
    refund.add_argument("peek", help="the peek id (pek_...)")
    refund.add_argument("--reason", required=True, help="why; shown to the peek's user")
    refund.set_defaults(handler=cmd_peeks)

    payouts = sub.add_parser("payouts", help="Stripe Connect payouts (stripe payments provider)")
    payout_actions = payouts.add_subparsers(dest="payouts_command", required=True)
    run_batch = payout_actions.add_parser(
        "run",
        parents=[db],
        help="pay pending and failed payouts as one batch (or re-run --batch ID); safe to repeat",
    )
    run_batch.add_argument("--batch", default=None, help="re-send the unpaid payouts of this batch (pob_...)")
    run_batch.add_argument("--min-age", type=float, default=60.0, help="skip payouts younger than this (s)")
    run_batch.set_defaults(handler=cmd_payouts)


def _add_flags(sub: Any, db: argparse.ArgumentParser) -> None:
    group = sub.add_parser("flags", help="feature flags: kill switches, per-tool switches, rollouts")
    actions = group.add_subparsers(dest="flags_command", required=True)
    set_flag = actions.add_parser(
        "set", parents=[db], help="set a flag, e.g. flags set peeks off; servers apply it within a second"
    )
    set_flag.add_argument(
        "key", help="the flag: peeks, payouts, registration, referrals, advanced_analytics, tool.NAME"
    )
    set_flag.add_argument("value", help="on/off (true/false), a number, or a string")
    set_flag.add_argument(
        "--rules",
        help='targeting rules as JSON, first match wins, e.g. \'[{"value": true, "groups": ["beta"]}, '
        '{"value": true, "percentage": 30}]\'; [] drops them (default: keep)',
    )
    set_flag.add_argument(
        "--when-off", choices=["hide", "show"], help="hide: tools it switches off leave tools/list (default: keep)"
    )
    set_flag.add_argument("--reason", default="", help="why, for the audit log")
    set_flag.set_defaults(handler=cmd_flags)
    actions.add_parser("list", parents=[db], help="every flag (JSON lines), then the groups").set_defaults(
        handler=cmd_flags
    )
    history = actions.add_parser("history", parents=[db], help="audited changes, newest first: who, when, old -> new")
    history.add_argument("key", nargs="?", help="one flag only (or group:NAME)")
    history.add_argument("--limit", type=list_limit, default=50, help="print at most this many (default 50)")
    history.set_defaults(handler=cmd_flags)
    for name, text in (("group-add", "put a principal in a group"), ("group-remove", "take one out of a group")):
        change = actions.add_parser(name, parents=[db], help=f"{text} (named groups, e.g. beta, that rules target)")
        change.add_argument("name", help="the group, e.g. beta")
        change.add_argument("principal", help="the principal id (agt_..., usr_..., adm_...)")
        change.add_argument("--reason", default="", help="why, for the audit log")
        change.set_defaults(handler=cmd_flags)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentchat-mcp", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"agentchat-mcp {__version__}")
    parser.add_argument("--db", help=DB_HELP)
    sub = parser.add_subparsers(dest="command")
    db = _with_db()
    _add_serve(sub, db)

    demo = sub.add_parser("demo", help="run two agents end to end on a temp database and print the transcript")
    demo.add_argument("--keep", action="store_true", help="keep the temp database and logs afterwards")
    demo.set_defaults(handler=cmd_demo)

    _add_accounts(sub, db)
    _add_invites(sub, db)
    _add_database(sub, db)
    _add_money(sub, db)
    _add_flags(sub, db)

    analytics = sub.add_parser("analytics", help="platform analytics for operators")
    analytics_actions = analytics.add_subparsers(dest="analytics_command", required=True)
    export_analytics = analytics_actions.add_parser(
        "export", parents=[db], help="the platform's figures: CSV, one row per day, or JSON, every figure"
    )
    export_analytics.add_argument(
        "--period",
        choices=["week", "month", "quarter", "year"],
        default="month",
        help="the last 7, 30, 90 or 365 UTC days (default: month)",
    )
    export_analytics.add_argument(
        "--format", choices=["csv", "json"], default="csv", help="csv: one row per day; json: every figure"
    )
    export_analytics.add_argument("--output", help="write to this file instead of stdout")
    export_analytics.set_defaults(handler=cmd_analytics)

    schemas = sub.add_parser("schemas", help="the tool contract")
    schema_actions = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schema_actions.add_parser("export", help="write schemas/*.json from the code")
    export.add_argument("--out", default="schemas", help="the folder to write them to (default: schemas)")
    export.add_argument(
        "--docs",
        action="store_true",
        help="also write docs/tools.md and the SDK's methods (agentchat_mcp/client/_tools.py) beside --out",
    )
    export.set_defaults(handler=cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `agentchat-mcp` console script."""
    from agentchat_mcp import logs
    from agentchat_mcp.errors import OperatorError

    logs.configure("WARNING")  # JSON lines on stderr: stdout is the stdio protocol
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `agentchat-mcp` is `serve --transport stdio`
        args = parser.parse_args([*(argv or sys.argv[1:]), "serve"])
    code = 2
    try:
        settings = _settings(args)
        logs.configure(settings.log_level, access_log=settings.access_log)
        code = args.handler(args, settings)
    except* OperatorError as failed:  # also from inside a server's task groups
        for exc in _leaves(failed):
            print(f"error: {exc}", file=sys.stderr)
    sys.exit(code)


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    return [
        leaf for exc in group.exceptions for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]
