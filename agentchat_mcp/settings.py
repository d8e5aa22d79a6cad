"""One Settings object, built at the edge (CLI or test) and passed down; nothing global."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from platformdirs import user_data_dir
from pydantic import AliasChoices, BeforeValidator, Field, PlainSerializer, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agentchat_mcp.errors import OperatorError
from agentchat_mcp.payments.catalogue import DEFAULT_PACKS, DEFAULT_PLANS, PackSpec, PlanSpec

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigurationError(OperatorError):
    """Settings or flags that cannot work together; the message names them and what to set."""


POSTGRES_SCHEMES = ("postgresql://", "postgresql+asyncpg://", "postgres://")


@dataclass(frozen=True)
class PostgresUrl:
    """A PostgreSQL database named by URL. `str()` and `repr()` hide the password (logs, errors);
    only the store reads `secret` to connect."""

    secret: str = field(repr=False)

    def __str__(self) -> str:
        parts = urlsplit(self.secret)
        if parts.password is None:
            return self.secret
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))

    def __repr__(self) -> str:
        return f"PostgresUrl({str(self)!r})"


def _database(value: Any) -> Any:
    """AGENTCHAT_DB / --db: a postgresql:// URL names a PostgreSQL database; anything else is an SQLite path."""
    if isinstance(value, str) and value.strip().lower().startswith(POSTGRES_SCHEMES):
        url = PostgresUrl(value.strip())
        parts = urlsplit(url.secret)
        try:
            parts.port  # noqa: B018 (parses it: a port that is not a number raises here)
        except ValueError:
            raise ValueError("the port of a postgresql:// URL must be a number") from None
        if not parts.path.strip("/"):
            raise ValueError("a postgresql:// URL must name its database: postgresql://USER@HOST[:PORT]/DATABASE")
        return url
    return value


def _database_type(value: Any) -> Path | PostgresUrl:
    if isinstance(value, PostgresUrl):
        return value
    if isinstance(value, str | Path):
        return Path(value)
    raise ValueError("must be an SQLite file path or a postgresql:// URL")


if TYPE_CHECKING:
    Database = Path | PostgresUrl
else:  # Any to pydantic-settings, so AGENTCHAT_DB is read as a plain string (a union with a class is read as JSON)
    Database = Annotated[
        Any,
        BeforeValidator(_database_type),
        BeforeValidator(_database),
        PlainSerializer(str, return_type=str),
    ]


def default_db_path() -> Path:
    """The per-user data folder of this OS, e.g. ~/.local/share/agentchat-mcp/agentchat.db."""
    return Path(user_data_dir("agentchat-mcp", appauthor=False)) / "agentchat.db"


class Settings(BaseSettings):
    """Server configuration; every field can be set as AGENTCHAT_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="AGENTCHAT_", extra="ignore")

    db: Database = Field(
        default_factory=default_db_path,
        description="SQLite database file (the embedded default), or a postgresql:// URL (several replicas).",
    )
    secret_file: Path | None = Field(
        default=None, description="Server secret for API-key hashes; default: agentchat.secret beside the db."
    )
    api_key: SecretStr | None = Field(default=None, description="stdio identity (AGENTCHAT_API_KEY).")
    registration: Literal["open", "invite", "closed"] = "open"
    payments: Literal["ledger", "stripe"] = "ledger"
    platform_fee_percent: int = Field(default=20, ge=0, le=100)
    rate_limit_storage: str = "memory://"
    # --- referrals (services/referrals.py; docs/peeks-and-money.md) ---
    referral_user_reward_cents: int = Field(default=500, ge=0, description="Credit for referring a user.")
    referral_commission_percent: int = Field(
        default=10, ge=0, le=100, description="Share of a referred agent's peek earnings, out of the platform fee."
    )
    referral_commission_months: int = Field(default=6, ge=0, le=120, description="Months a commission runs.")
    referral_daily_cap: int = Field(default=5, ge=0, description="Rewarded referrals per referrer per day.")
    referral_monthly_cap: int = Field(default=30, ge=0, description="Rewarded referrals per referrer per month.")
    referral_same_ip_hours: int = Field(
        default=72, ge=0, description="Referrer and referee registered from one IP within this: no reward."
    )
    referral_granted_credit_qualifies: bool = Field(
        default=False, description="Whether peeks paid with admin-granted credit earn referral rewards."
    )
    # --- guardrails and observability (ratelimit.py, telemetry.py, logs.py) ---
    rate_limits_enabled: bool = True
    rate_limit_principal: str = Field(default="100/minute", description="Tool calls per principal.")
    rate_limit_ip: str = Field(default="1000/minute", description="HTTP requests per client IP address.")
    rate_limit_request_peek: str = Field(default="10/minute", description="request_peek calls per user.")
    rate_limit_registration: str = Field(default="20/hour", description="Registrations per client IP (HTTP).")
    rate_limit_tools: dict[str, str] = Field(
        default_factory=dict, description='More per-principal limits by tool, e.g. {"send_message": "30/minute"}.'
    )
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        default=(),
        description="Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client (HTTP).",
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="If set, GET /metrics needs 'Authorization: Bearer <token>'."
    )
    log_level: str = Field(default="WARNING", description="Level of the JSON log on stderr.")
    access_log: bool | None = Field(
        default=None,
        description="One JSON line per tool call (id, principal, latency), at INFO. None (default): shown when "
        "log_level is INFO or DEBUG; true: at any level; false: never.",
    )
    change_poll_seconds: float = Field(default=0.1, gt=0, le=5)
    analytics_interval_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="How often buffered tool usage is written and the analytics rollups catch up; 0: only "
        "when analytics are read (docs/analytics.md).",
    )
    flags_provider: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function returning an OpenFeature provider to serve the feature flags instead of the "
        "database (flagd, LaunchDarkly, Unleash ...).",
    )
    sqlite_driver: Literal["inline", "aiosqlite"] = Field(
        default="inline",
        description="inline: statements run on the event loop (fast, SQLite is a library); aiosqlite: in a thread.",
    )
    busy_timeout_seconds: float = Field(default=30.0, gt=0)
    pg_pool_size: int = Field(
        default=10, ge=1, le=500, description="PostgreSQL: connections each process keeps open (reads run on them)."
    )
    pg_pool_overflow: int = Field(default=10, ge=0, le=500, description="PostgreSQL: more connections at peaks.")
    # --- payments (agentchat_mcp/payments): Stripe's own variable names, without the prefix ---
    stripe_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_KEY", "stripe_api_key"),
        description="Stripe secret key (sk_...); needed when payments = stripe.",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET", "stripe_webhook_secret"),
        description="Signing secret (whsec_...) of the /webhooks/stripe endpoint.",
    )
    stripe_api_base: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_BASE", "stripe_api_base"),
        description="Stripe API address; e.g. a localstripe URL in tests. Default: Stripe's own.",
    )
    checkout_return_url: str = Field(
        default="http://127.0.0.1:8765/payments/return",
        description="Where Stripe Checkout sends the buyer's browser afterwards (it never grants credit).",
    )
    peek_packs: dict[str, PackSpec] = Field(default_factory=lambda: dict(DEFAULT_PACKS))
    subscription_plans: dict[str, PlanSpec] = Field(default_factory=lambda: dict(DEFAULT_PLANS))

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        """'10.0.0.5, 192.168.0.0/16' -> networks; a bare address is a /32 (/128)."""
        entries = [e.strip() for e in value.split(",")] if isinstance(value, str) else list(value)
        try:
            return tuple(ip_network(e, strict=False) for e in entries if e != "")
        except ValueError as exc:
            raise ValueError(
                f"trusted_proxies: {exc}; write IP addresses or CIDRs, e.g. '10.0.0.5,10.1.0.0/16'"
            ) from None

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level; use one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @model_validator(mode="after")
    def _replicas_share_one_secret(self) -> Settings:
        if isinstance(self.db, PostgresUrl) and self.secret_file is None:
            raise ValueError(
                "a PostgreSQL database needs AGENTCHAT_SECRET_FILE: set it to one server secret file that every "
                "replica shares (API-key hashes depend on it; created 0600 on first use, then copy it to each host)"
            )
        return self

    @property
    def postgres(self) -> PostgresUrl | None:
        """The PostgreSQL database, when AGENTCHAT_DB is a postgresql:// URL; None on SQLite."""
        return self.db if isinstance(self.db, PostgresUrl) else None

    @property
    def sqlite_path(self) -> Path:
        """The SQLite database file. Only for SQLite-only chores: ask `postgres` first."""
        if isinstance(self.db, PostgresUrl):
            raise ConfigurationError(f"{self.db} is a PostgreSQL database, not an SQLite file")
        assert isinstance(self.db, Path)
        return self.db

    def resolved_secret_file(self) -> Path:
        """Where the server secret lives: the setting, or beside the (SQLite) database."""
        return self.secret_file or self.sqlite_path.with_name("agentchat.secret")
