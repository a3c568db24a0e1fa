"""``synced-store token``: mint an HS256 JWT for a user (tests, the demo, scripts)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import click

from .loading import CliError

__all__ = ["parse_duration", "token"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``1h``, ``7d`` (a bare number is seconds); > 0."""
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise CliError(f"bad duration {text!r}: use a number with s, m, h or d (30s, 15m, 1h, 7d)")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise CliError(f"bad duration {text!r}: must be more than 0 seconds")
    return seconds


def _check_pattern(pattern: str) -> str:
    """An exact instance id, or a prefix of one followed by ``*`` (a lone ``*``: every id)."""
    from ..errors import SyncedStoreError
    from ..storage.ids import validate_instance_id

    prefix = pattern[:-1] if pattern.endswith("*") else pattern
    if "*" in prefix:
        raise CliError(f"bad --instance {pattern!r}: '*' may only end a prefix (team-*)")
    if prefix:
        try:
            # Any prefix of a valid id is a valid id once ".." is ruled out (checked too).
            validate_instance_id(prefix)
        except SyncedStoreError:
            raise CliError(
                f"bad --instance {pattern!r}: instance ids are 1-128 characters of "
                "A-Z a-z 0-9 _ . - not starting with . - or _"
            ) from None
    return pattern


@click.command("token")
@click.option(
    "--secret-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the HS256 secret (at least 32 bytes; one trailing newline is ignored), "
    "the same file as `serve --jwt-secret-file`.",
)
@click.option("--user", "user_id", required=True, help="The user id (the token's `sub`).")
@click.option(
    "--instance",
    "instances",
    multiple=True,
    metavar="ID|PREFIX*",
    help="An instance the token may open: an exact id or a prefix ending in * (repeat the "
    "option for more). Default: no restriction.",
)
@click.option(
    "--ttl",
    default="1h",
    show_default=True,
    help="How long the token is valid: 30s, 15m, 1h, 7d.",
)
@click.option("--audience", default=None, help="The `aud` claim (for `serve --jwt-audience`).")
@click.option("--issuer", default=None, help="The `iss` claim (for `serve --jwt-issuer`).")
def token(
    secret_file: Path,
    user_id: str,
    instances: tuple[str, ...],
    ttl: str,
    audience: str | None,
    issuer: str | None,
) -> None:
    """Print a signed HS256 JWT for --user to stdout.

    The token carries `sub` (the user id), `iat`, `exp` (now + --ttl) and, with --instance,
    an `instances` claim listing the instances it opens; a server started with
    `serve --jwt-secret-file` on the same file accepts it. Meant for tests, the demo and
    scripts: in production your login service issues the tokens.

    \b
    Example:
        openssl rand -base64 48 > jwt.secret && chmod 600 jwt.secret
        synced-store token --secret-file jwt.secret --user alice --instance room1 --ttl 15m
        synced-store token --secret-file jwt.secret --user bob --instance 'team-42-*' --ttl 7d
    """
    from ..server.jwt_auth import AuthConfigError, load_secret_file, mint_token

    seconds = parse_duration(ttl)
    patterns = [_check_pattern(p) for p in instances] if instances else None
    claims: dict[str, str] = {}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    try:
        secret = load_secret_file(secret_file)
        text = mint_token(secret, user_id, instances=patterns, ttl=seconds, claims=claims)
    except AuthConfigError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    click.echo(text)
