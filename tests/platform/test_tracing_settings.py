"""The sampler comes from OpenTelemetry's standard variables (OTEL_TRACES_SAMPLER and its
argument) while export is on; without export new traces stay unrecorded whatever is set.
tests/platform/test_tracing.py runs a server with them and checks what a collector receives."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from expensetracker.platform.config import Settings
from expensetracker.platform.tracing import sampler

EXPORTING = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.monitoring:4318"}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("always_on", "AlwaysOnSampler"),
        ("always_off", "AlwaysOffSampler"),
        ("traceidratio", "TraceIdRatioBased{0.25}"),
        ("parentbased_always_on", "ParentBased{root:AlwaysOnSampler,"),
        ("parentbased_always_off", "ParentBased{root:AlwaysOffSampler,"),
        ("parentbased_traceidratio", "ParentBased{root:TraceIdRatioBased{0.25},"),
    ],
)
def test_every_standard_sampler_name_is_honoured(
    monkeypatch: pytest.MonkeyPatch, name: str, description: str
) -> None:
    chosen = settings(
        monkeypatch, **EXPORTING, OTEL_TRACES_SAMPLER=name, OTEL_TRACES_SAMPLER_ARG="0.25"
    )
    assert sampler(chosen).get_description().startswith(description)


def test_the_default_keeps_every_new_trace_and_follows_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    description = sampler(settings(monkeypatch, **EXPORTING)).get_description()
    assert description.startswith("ParentBased{root:AlwaysOnSampler,remoteParentSampled:")
    assert "remoteParentNotSampled:AlwaysOffSampler" in description


def test_without_export_no_new_trace_is_recorded_whatever_the_sampler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chosen = settings(monkeypatch, OTEL_TRACES_SAMPLER="always_on")
    assert sampler(chosen).get_description().startswith("ParentBased{root:AlwaysOffSampler,")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_TRACES_SAMPLER_ARG", "-0.1"),
        ("OTEL_TRACES_SAMPLER_ARG", "a tenth"),
    ],
)
def test_a_bad_sampler_setting_stops_the_process_with_its_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    with pytest.raises(ValidationError, match=name):
        settings(monkeypatch, **EXPORTING, **{name: value})


def test_the_service_name_is_read_and_a_blank_one_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings(monkeypatch, OTEL_SERVICE_NAME="auth-eu").otel_service_name == "auth-eu"
    assert settings(monkeypatch, OTEL_SERVICE_NAME=" ").otel_service_name is None
