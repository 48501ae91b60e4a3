"""Settings: environment defaults, and refusal of unsafe configuration outside development."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from expensetracker.platform.application import create_app
from expensetracker.platform.config import Environment, Settings
from expensetracker.targets import resolve_targets

REAL_KEK = "k" * 16 + "Zq8!v2#Lr9@pT4$w"
REAL_DB = "postgresql://expenses:Zq8v2Lr9pT4w@db:5432/expensetracker"


def production(**overrides: object) -> Settings:
    values = {"env": "production", "database_url": REAL_DB, "key_encryption_key": REAL_KEK}
    # Settings fields of several types in one dict: pydantic checks each.
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


def test_development_defaults_are_verbose_with_docs() -> None:
    settings = Settings(env="development")
    assert settings.effective_log_level == "DEBUG"
    assert settings.effective_log_format == "console"
    assert settings.effective_docs_enabled is True
    assert settings.effective_shutdown_drain_seconds == 0
    assert settings.rate_limit == "100/minute"


@pytest.mark.parametrize("env", ["staging", "production"])
def test_staging_and_production_log_json_and_hide_docs(env: str) -> None:
    settings = production(env=env)
    assert settings.env is Environment(env)
    assert settings.effective_log_format == "json"
    assert settings.effective_log_level == "INFO"
    assert settings.effective_docs_enabled is False
    assert settings.effective_shutdown_drain_seconds > 0


def test_explicit_values_override_environment_defaults() -> None:
    settings = production(log_level="WARNING", docs_enabled=True, shutdown_drain_seconds=0)
    assert settings.effective_log_level == "WARNING"
    assert settings.effective_docs_enabled is True
    assert settings.effective_shutdown_drain_seconds == 0


def test_settings_come_from_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPENSETRACKER_ENV", "staging")
    monkeypatch.setenv("EXPENSETRACKER_DATABASE_URL", REAL_DB)
    monkeypatch.setenv("EXPENSETRACKER_KEY_ENCRYPTION_KEY", REAL_KEK)
    monkeypatch.setenv(
        "EXPENSETRACKER_CORS_ORIGINS", "https://a.example.org, https://b.example.org"
    )
    monkeypatch.setenv("EXPENSETRACKER_DB_POOL_SIZE", "7")
    settings = Settings()
    assert settings.env is Environment.staging
    assert settings.cors_origins == ["https://a.example.org", "https://b.example.org"]
    assert settings.db_pool_size == 7


@pytest.mark.parametrize("env", ["staging", "production"])
@pytest.mark.parametrize("target", ["auth", "expenses", "reports"])
def test_missing_database_refused_outside_development(env: str, target: str) -> None:
    settings = Settings(env=env, key_encryption_key=REAL_KEK, auth_url="http://auth:8000")
    with pytest.raises(ValueError, match=f"DATABASE_URL is required by the {target} service"):
        create_app(resolve_targets(target), settings)


def test_the_web_app_needs_no_database_but_its_session_key() -> None:
    """Least privilege: the web pod holds no database credentials at all."""
    settings = Settings(env="production", auth_url="http://auth:8000")
    with pytest.raises(ValueError, match="WEB_SESSION_KEY is required by the web service"):
        create_app(resolve_targets("web"), settings)
    key = "a-real-session-key-of-forty-characters-xy"
    create_app(resolve_targets("web"), settings.model_copy(update={"web_session_key": key}))
    with pytest.raises(ValidationError, match="WEB_SESSION_KEY must be a real secret"):
        Settings(env="production", web_session_key="changeme-changeme-changeme-changeme")


def test_only_the_auth_service_requires_the_key_encryption_key() -> None:
    """Least privilege: the expenses and reports pods are not given the key at all."""
    without_key = production(key_encryption_key=None, auth_url="http://auth:8000")
    for target in ("expenses", "reports"):
        create_app(resolve_targets(target), without_key)
    for target in ("auth", "all"):
        with pytest.raises(ValueError, match="KEY_ENCRYPTION_KEY is required by the auth service"):
            create_app(resolve_targets(target), without_key)
    create_app(resolve_targets("auth"), production())


@pytest.mark.parametrize(
    "database_url",
    [
        "postgresql://expenses@db/expensetracker",  # no password
        "postgresql://expenses:changeme@db/expensetracker",
        "postgresql://expenses:postgres@db/expensetracker",
        "postgresql://expenses:dev-only-password@db/expensetracker",
    ],
)
def test_placeholder_database_password_refused_in_production(database_url: str) -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL has a missing or placeholder"):
        production(database_url=database_url)
    with pytest.raises(ValidationError, match="DATABASE_READ_URL has a missing or placeholder"):
        production(database_read_url=database_url)


@pytest.mark.parametrize("kek", ["change-me-" * 4, "short-but-real-9f2", "PLACEHOLDER" * 4])
def test_placeholder_or_short_key_encryption_key_refused_in_production(kek: str) -> None:
    with pytest.raises(ValidationError, match="KEY_ENCRYPTION_KEY"):
        production(key_encryption_key=kek)


def test_development_accepts_missing_secrets() -> None:
    assert Settings(env="development").database_url is None


def test_real_production_configuration_is_accepted() -> None:
    settings = production()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == REAL_DB
    assert REAL_KEK not in repr(settings)  # secrets never appear in reprs (and so in logs)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("env", "qa"),
        ("rate_limit", "lots"),
        ("database_url", "mysql://u:p@h/d"),
        ("db_pool_size", 0),
        ("log_format", "xml"),
    ],
)
def test_invalid_values_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        # A field of any type with an invalid value: the point is pydantic refusing it.
        Settings(**{field: value})  # type: ignore[arg-type]


def test_wildcard_cors_with_credentials_refused() -> None:
    with pytest.raises(ValidationError, match="'\\*' cannot be combined with credentials"):
        Settings(cors_origins=["*"], cors_allow_credentials=True)


def test_rate_limit_accepts_limits_notation_and_off() -> None:
    assert Settings(rate_limit="10/second;1000/hour").rate_limit == "10/second;1000/hour"
    assert Settings(rate_limit="OFF").rate_limit == "off"


def test_secrets_are_read_from_files_in_the_secrets_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXPENSETRACKER_SECRETS_DIR: a mounted Secret, one file per setting (as in staging and
    production), read by Settings itself; an environment variable still wins."""
    (tmp_path / "expensetracker_database_url").write_text(REAL_DB + "\n")
    (tmp_path / "expensetracker_key_encryption_key").write_text(REAL_KEK)
    monkeypatch.setenv("EXPENSETRACKER_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("EXPENSETRACKER_DATABASE_URL", raising=False)
    monkeypatch.delenv("EXPENSETRACKER_KEY_ENCRYPTION_KEY", raising=False)
    settings = Settings(env="production")
    assert settings.database_url.get_secret_value() == REAL_DB
    assert settings.key_encryption_key.get_secret_value() == REAL_KEK
    other_db = REAL_DB.replace("@db:", "@other:")
    monkeypatch.setenv("EXPENSETRACKER_DATABASE_URL", other_db)
    assert Settings(env="production").database_url.get_secret_value() == other_db
    # A placeholder in a file is refused like one in the environment.
    monkeypatch.delenv("EXPENSETRACKER_DATABASE_URL")
    (tmp_path / "expensetracker_key_encryption_key").write_text("change-me")
    with pytest.raises(ValidationError, match="KEY_ENCRYPTION_KEY"):
        Settings(env="production")
