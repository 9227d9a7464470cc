"""Configuration: defaults, parsing, errors that name the variable, secrets never shown."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import config


def test_defaults_are_local_and_safe() -> None:
    s = config.load({})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.clickhouse_url.startswith("chdb://.pulse/")
    assert s.embedded_clickhouse
    assert (s.gateway_host, s.gateway_port) == ("127.0.0.1", 8080)
    assert (s.worker_host, s.worker_port) == ("127.0.0.1", 6066)
    assert s.github_webhook_secret is None
    assert s.ingest_tokens == {}
    assert s.max_body_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("PULSE_GATEWAY_PORT", "abc", "whole number"),
        ("PULSE_WORKER_PORT", "70000", "between 1 and 65535"),
        ("PULSE_KAFKA_BOOTSTRAP", "localhost", "host:port"),
        ("PULSE_CLICKHOUSE_URL", "postgres://x", "chdb://"),
        ("PULSE_CLICKHOUSE_URL", "chdb://", "needs a path"),
        ("PULSE_INGEST_TOKENS", "short", "16 characters"),
        ("PULSE_PRODUCE_TIMEOUT_S", "-1", "greater than 0"),
        ("PULSE_LOG_LEVEL", "LOUD", "DEBUG"),
        ("PULSE_TOPIC_PREFIX", "a b", "letters"),
        ("PULSE_NO_SUCH_THING", "1", "unknown setting"),
    ],
)
def test_invalid_value_names_the_variable(variable: str, value: str, words: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load({variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(variable)
    assert words in str(info.value)


def test_server_url_selects_server_mode_and_hides_password() -> None:
    s = config.load({"PULSE_CLICKHOUSE_URL": "https://pulse:hunter2hunter2@ch.example:8443/pulse"})
    assert not s.embedded_clickhouse
    shown = dict((name, value) for name, value, _ in s.described())
    assert "hunter2hunter2" not in shown["PULSE_CLICKHOUSE_URL"]
    assert "ch.example" in shown["PULSE_CLICKHOUSE_URL"]


def test_per_instance_discourse_secret_falls_back_to_default() -> None:
    s = config.load(
        {
            "PULSE_DISCOURSE_WEBHOOK_SECRET": "default-secret",
            "PULSE_DISCOURSE_WEBHOOK_SECRETS": "https://forum.a/=alpha-secret,http://b=beta-secret",
        }
    )
    assert s.discourse_secret_for("https://forum.a") == config.Secret("alpha-secret")
    assert s.discourse_secret_for("http://b/") == config.Secret("beta-secret")
    assert s.discourse_secret_for("https://other") == config.Secret("default-secret")


def test_ingest_tokens_name_their_sender() -> None:
    s = config.load({"PULSE_INGEST_TOKENS": "crm=aaaaaaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbbbbbbbbbb"})
    assert set(s.ingest_tokens) == {"crm", "sender-2"}
    assert s.ingest_tokens["crm"].reveal() == "a" * 20


secret_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=",="),
    min_size=16,
    max_size=40,
)


@given(secret_text)
def test_secrets_never_shown(tail: str) -> None:
    secret = "S3cR!" + tail  # a marker that nothing else in the output contains
    s = config.load(
        {
            "PULSE_GITHUB_WEBHOOK_SECRET": secret,
            "PULSE_SLACK_SIGNING_SECRET": secret,
            "PULSE_DISCOURSE_WEBHOOK_SECRETS": f"https://f={secret}",
            "PULSE_INGEST_TOKENS": f"crm={secret}",
        }
    )
    assert secret not in repr(s)
    assert secret not in str(s.described())


def test_bad_secret_entry_error_does_not_echo_it() -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load({"PULSE_DISCOURSE_WEBHOOK_SECRETS": "no-equals-sign-topsecret"})
    assert "topsecret" not in str(info.value)


def test_pulse_config_command_masks_and_reports_errors() -> None:
    env = {"PULSE_GITHUB_WEBHOOK_SECRET": "s3cr3t-value-for-test", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "config"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "PULSE_GITHUB_WEBHOOK_SECRET" in out
    assert "s3cr3t-value-for-test" not in out
    assert "********" in out
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "config"],
        env={**env, "PULSE_GATEWAY_PORT": "zero"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "PULSE_GATEWAY_PORT" in bad.stderr


def test_readme_documents_every_variable_with_its_default() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for var in config.VARIABLES:
        shown = f"`{var.default}`" if var.default else "(not set)"
        assert f"| `{var.env}` | {shown} |" in readme, f"README's configuration table lacks {var.env}"
