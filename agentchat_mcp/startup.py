"""What `serve` checks before it serves: a start that cannot work stops with one line, exit 2.

A desktop client shows a stdio server's stderr in its log and little else. A server that starts
anyway (anonymous after a mistyped key, on a new database in whatever folder the client chose,
without the card payments it was configured for) misleads the model that uses it: with a bad key
the model registers a second identity. So each check raises an OperatorError whose text names the
setting or path at fault and what to do; `cli.main` prints it as `error: ...` and exits 2.
"""

from __future__ import annotations

from pathlib import Path

from agentchat_mcp import payments, server_secret
from agentchat_mcp.errors import NotAuthenticated
from agentchat_mcp.ratelimit import RateLimiter
from agentchat_mcp.settings import ConfigurationError, Settings
from agentchat_mcp.store import check_path, open_settings_store

KEY_NOT_VALID = (
    "AGENTCHAT_API_KEY is not a valid key on the database {db} (unknown, or rotated): set {setting} to the "
    "database the key was created on, or AGENTCHAT_API_KEY to a current key (agentchat-mcp agent create makes one)"
)


def db_setting(from_flag: bool) -> str:
    """How the operator named the database: the flag or the environment variable."""
    return "--db" if from_flag else "AGENTCHAT_DB"


def check_configuration(settings: Settings, *, stdio: bool, db_from_flag: bool = False) -> None:
    """Settings that cannot work, found before anything is opened or created."""
    setting = db_setting(db_from_flag)
    payments.check_settings(settings)
    try:
        RateLimiter.from_settings(settings)  # parses every limit; opens no connection
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if settings.postgres is not None:  # nothing to check on disk; the store says if it cannot connect
        load_keyring(settings)
        return
    if stdio and not settings.sqlite_path.expanduser().is_absolute():
        shown = f"--db {settings.db}" if db_from_flag else f"AGENTCHAT_DB={settings.db}"
        raise ConfigurationError(
            f"{shown} is a relative path, and a stdio server runs in whatever folder its client starts it in "
            f"(here: {Path.cwd() / settings.sqlite_path}): set {setting} to an absolute path"
        )
    db = check_path(settings.sqlite_path)
    if stdio and settings.api_key is not None and not db.exists():
        raise ConfigurationError(
            f"AGENTCHAT_API_KEY is set but the database {db} does not exist: set {setting} to the database "
            "the key was created on"
        )
    load_keyring(settings)


def load_keyring(settings: Settings) -> server_secret.Keyring:
    """The server secret, created on first use; a file others can read, or a damaged one, refused.

    Inside a running server these surface as a traceback from its lifespan, and under stdio
    nothing but the protocol may reach stdout: so every command loads it here first.
    """
    path = settings.resolved_secret_file()
    try:
        return server_secret.load_keyring(path)
    except (PermissionError, ValueError) as exc:  # their texts say what to do (chmod 600, the format)
        raise ConfigurationError(str(exc)) from None
    except OSError as exc:
        raise ConfigurationError(
            f"cannot use the server secret {path} ({exc.strerror}): set AGENTCHAT_SECRET_FILE to a file in a "
            "folder you can write to"
        ) from None


async def check_database(settings: Settings, *, stdio: bool, db_from_flag: bool = False) -> None:
    """Open and migrate the database; on stdio, make sure AGENTCHAT_API_KEY is a key on it."""
    from agentchat_mcp.services.identity import Identity

    async with open_settings_store(settings) as store:
        if not stdio or settings.api_key is None:
            return
        identity = Identity(store, load_keyring(settings))
        try:
            await identity.authenticate(settings.api_key.get_secret_value())
        except NotAuthenticated:
            raise ConfigurationError(KEY_NOT_VALID.format(db=store.shown, setting=db_setting(db_from_flag))) from None
