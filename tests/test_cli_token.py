"""``synced-store token``: mints an HS256 JWT that a JwtAuthenticator on the same secret accepts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner, Result

from synced_store.cli import cli
from synced_store.cli.loading import CliError
from synced_store.cli.tokens import parse_duration
from synced_store.server.jwt_auth import JwtAuthenticator

SECRET = "cli-token-test-secret-0123456789abcdef"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    f = tmp_path / "jwt.secret"
    f.write_text(SECRET + "\n")  # as `openssl rand -base64 48 > f` writes it
    f.chmod(0o600)
    return f


def run(*args: object, ok: bool = True) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_token_is_accepted_by_a_server_with_the_same_secret(secret_file: Path) -> None:
    result = run("token", "--secret-file", secret_file, "--user", "alice")
    token = result.stdout.strip()
    assert result.stdout == token + "\n"  # one line: the token only
    identity = JwtAuthenticator.from_secret_file(secret_file)(token)
    assert identity is not None
    assert identity.user_id == "alice"
    assert "instances" not in identity.claims  # no restriction
    assert identity.expires_at is not None
    assert 3599 <= identity.expires_at - time.time() <= 3601  # the default --ttl 1h
    assert JwtAuthenticator(secret=SECRET.encode() + b"-other")(token) is None


def test_token_with_instances_ttl_audience_and_issuer(secret_file: Path) -> None:
    result = run(
        "token",
        "--secret-file",
        secret_file,
        "--user",
        "bob",
        "--instance",
        "room1",
        "--instance",
        "team-42-*",
        "--ttl",
        "15m",
        "--audience",
        "chat",
        "--issuer",
        "login",
    )
    token = result.stdout.strip()
    auth = JwtAuthenticator.from_secret_file(secret_file, audience="chat", issuer="login")
    identity = auth(token)
    assert identity is not None
    assert identity.claims["instances"] == ["room1", "team-42-*"]
    assert identity.claims["exp"] - identity.claims["iat"] in (900, 901)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert JwtAuthenticator.from_secret_file(secret_file)(token) is None  # aud not expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1h", 3600), ("7d", 604800), ("90", 90), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-5m", "1y", "h", "1 hour", "1e9", "inf"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(CliError, match="bad duration"):
        parse_duration(text)


def test_errors_are_clear(secret_file: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.secret"
    short.write_text("too-short\n")
    cases = [
        (["--secret-file", tmp_path / "missing", "--user", "a"], "cannot read JWT secret file"),
        (["--secret-file", short, "--user", "a"], "9 bytes; HS256 needs at least 32"),
        (["--secret-file", secret_file, "--user", "a", "--ttl", "soon"], "bad duration 'soon'"),
        (["--secret-file", secret_file, "--user", "a", "--ttl", "0s"], "more than 0 seconds"),
        (["--secret-file", secret_file, "--user", "a/b"], "invalid user id"),
        (["--secret-file", secret_file, "--user", "a", "--instance", "a*b"], "may only end"),
        (["--secret-file", secret_file, "--user", "a", "--instance", "../x"], "bad --instance"),
    ]
    for args, message in cases:
        result = run("token", *args, ok=False)
        assert result.exit_code == 1, (args, result.output)
        assert result.stdout == ""
        assert "Error: " in result.output
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    result = run("token", "--user", "a", ok=False)
    assert result.exit_code == 2
    assert "Missing option '--secret-file'" in result.output


def test_help_has_an_example() -> None:
    out = run("token", "--help").output
    assert "Example:" in out
    assert "synced-store token --secret-file" in out


def test_the_console_script_prints_just_the_token(secret_file: Path) -> None:
    args = ["token", "--secret-file", str(secret_file), "--user", "carol", "--ttl", "30s"]
    proc = subprocess.run(
        [sys.executable, "-m", "synced_store.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    identity = JwtAuthenticator.from_secret_file(secret_file)(proc.stdout.strip())
    assert identity is not None
    assert identity.user_id == "carol"
