"""Built-in signed-token authentication: JSON Web Tokens verified with PyJWT.

:class:`JwtAuthenticator` is an ``authenticate(token)`` for
``create_app(..., authenticate=...)``, built from one key, which alone decides the algorithm:

- an HS256 shared secret (at least :data:`MIN_SECRET_BYTES` bytes; in a file, one trailing
  newline is stripped), or
- a PEM public key (or certificate): RSA (at least 2048 bits) verifies RS256, an EC P-256 key
  ES256 (P-384: ES384, P-521: ES512).

The ``alg`` of a token is never trusted: a token of any other algorithm — ``none``, or HS256
presented to a public-key server (key confusion) — is refused. A token must carry ``sub``
(the user id: non-empty, at most 128 characters, no ``/``) and ``exp``; ``aud`` and ``iss``
are checked when configured; ``nbf`` and ``iat`` are honoured as PyJWT does, with
:data:`DEFAULT_LEEWAY` seconds of clock skew. ``exp`` is enforced exactly (no leeway): the
server closes a connection at its token's ``exp``, so a token past it could not be used
anyway. The optional ``instances`` claim (:data:`~synced_store.server.auth.INSTANCES_CLAIM`)
lists the instance ids, or prefixes ending in ``*``, the token opens; the default ``authorize``
enforces it, and a malformed one refuses the token. Every refusal is logged once at INFO with
its reason, never with the token.

:func:`mint_token` makes tokens (for tests, the demo and ``synced-store token``);
:func:`authenticator_from_options` and :func:`check_dev_auth_host` are what ``serve`` calls.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import exceptions as jwt_errors

from .auth import INSTANCES_CLAIM, Identity

__all__ = [
    "DEFAULT_LEEWAY",
    "MIN_SECRET_BYTES",
    "AuthConfigError",
    "JwtAuthenticator",
    "TokenRefused",
    "authenticator_from_options",
    "check_dev_auth_host",
    "is_loopback_host",
    "load_public_key_file",
    "load_secret_file",
    "mint_token",
    "validate_instances_claim",
]

log = logging.getLogger("synced_store.server")

#: The shortest HS256 secret accepted (RFC 7518 §3.2: a key at least as long as the hash).
MIN_SECRET_BYTES = 32
#: The shortest RSA key accepted.
MIN_RSA_BITS = 2048
#: Seconds of clock skew tolerated for ``nbf`` and ``iat`` (an issuer whose clock runs a
#: little ahead). Not applied to ``exp``, which is enforced exactly.
DEFAULT_LEEWAY = 10.0
#: Longer tokens are refused before any parsing (a token is a few hundred bytes).
MAX_TOKEN_CHARS = 16_384
_MAX_USER_ID = 128

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class AuthConfigError(ValueError):
    """A key, option or host that authentication cannot be set up with (a clear message, for
    ``Error: ...`` on the command line)."""


class TokenRefused(Exception):
    """A token was refused; ``reason`` says why (never contains the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- keys ------------------------------------------------------------------------------------


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _looks_like_pem(data: bytes) -> bool:
    head = data.lstrip()[:40]
    return head.startswith((b"-----BEGIN", b"ssh-", b"ecdsa-sha2-"))


def _check_secret(secret: bytes, where: str = "the JWT secret") -> bytes:
    if _looks_like_pem(secret):
        raise AuthConfigError(
            f"{where} looks like a PEM/SSH key, not a shared secret; use a public key "
            "(--jwt-public-key-file) for RS256/ES256"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise AuthConfigError(
            f"{where} is {len(secret)} bytes; HS256 needs at least {MIN_SECRET_BYTES} "
            "(make one with: openssl rand -base64 48)"
        )
    return secret


def _as_secret(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def load_secret_file(path: str | os.PathLike[str]) -> bytes:
    """The HS256 secret in ``path``: its bytes, one trailing newline stripped; at least
    :data:`MIN_SECRET_BYTES` of them. Raises :class:`AuthConfigError` otherwise."""
    data = _read(path, "JWT secret file")
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    _check_secret(data, f"the JWT secret in {path}")
    try:
        if os.name == "posix" and os.stat(path).st_mode & 0o077:
            log.warning("JWT secret file %s is readable by other users (chmod 600 it)", path)
    except OSError:  # pragma: no cover - it was just read
        pass
    return data


def _public_key_from_pem(data: bytes, where: str) -> PublicKey:
    if b"PRIVATE KEY" in data:
        raise AuthConfigError(
            f"{where} holds a private key; give the server only the public key "
            "(openssl pkey -in private.pem -pubout -out public.pem)"
        )
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError:
        raise AuthConfigError(f"{where} is not a PEM public key or certificate") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise AuthConfigError(
                f"{where} is a {key.key_size}-bit RSA key; at least {MIN_RSA_BITS} bits are "
                "required"
            )
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        return key
    raise AuthConfigError(
        f"{where} is a {type(key).__name__} key; supported are RSA (RS256) and EC P-256 "
        "(ES256), P-384 (ES384), P-521 (ES512)"
    )


def load_public_key_file(path: str | os.PathLike[str]) -> PublicKey:
    """The RSA or EC public key in the PEM file ``path`` (a public key or a certificate).
    Raises :class:`AuthConfigError` for anything else (including a private key)."""
    return _public_key_from_pem(_read(path, "JWT public key file"), f"the JWT key in {path}")


def _algorithm_of(key: PublicKey) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    return _EC_ALGORITHMS[key.curve.name]


# -- claims ----------------------------------------------------------------------------------


def _check_user_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TokenRefused("the user id ('sub') must be a non-empty string")
    if len(value) > _MAX_USER_ID:
        raise TokenRefused(f"the user id ('sub') is longer than {_MAX_USER_ID} characters")
    if "/" in value:
        raise TokenRefused("the user id ('sub') contains '/'")
    return value


def validate_instances_claim(value: object) -> list[str]:
    """``value`` if it is a valid ``instances`` claim: a list of non-empty strings, each an
    instance id or a prefix ending in ``*`` (``*`` nowhere else). Raises ValueError."""
    if not isinstance(value, list):
        raise ValueError(f"'{INSTANCES_CLAIM}' must be a list of strings")
    for p in value:
        if not isinstance(p, str) or not p:
            raise ValueError(f"'{INSTANCES_CLAIM}' must be a list of non-empty strings")
        if "*" in p[:-1]:
            raise ValueError(f"'{INSTANCES_CLAIM}' entries may only end with '*'")
    return value


def _exp_of(claims: Mapping[str, Any]) -> float:
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise TokenRefused("'exp' is not a number")
    try:
        value = float(exp)
    except OverflowError:  # an integer too large for a float
        raise TokenRefused("'exp' is out of range") from None
    if not math.isfinite(value):
        raise TokenRefused("'exp' is out of range")
    return value


# -- the authenticator -----------------------------------------------------------------------


def _reason(exc: jwt_errors.PyJWTError) -> str:
    """A short, fixed reason for a PyJWT refusal (PyJWT's messages never echo the token)."""
    reasons: list[tuple[type[jwt_errors.PyJWTError], str]] = [
        (jwt_errors.ExpiredSignatureError, "expired"),
        (jwt_errors.ImmatureSignatureError, "not yet valid (nbf or iat in the future)"),
        (jwt_errors.InvalidSignatureError, "bad signature"),
        (jwt_errors.InvalidAlgorithmError, "algorithm not allowed"),
        (jwt_errors.InvalidAudienceError, "wrong audience"),
        (jwt_errors.InvalidIssuerError, "wrong issuer"),
        (jwt_errors.InvalidSubjectError, "'sub' is not a string"),
        (jwt_errors.InvalidIssuedAtError, "'iat' is not a number"),
        (jwt_errors.InvalidKeyError, "the key does not fit the token's algorithm"),
    ]
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return f"missing {exc.claim}"
    for cls, reason in reasons:
        if isinstance(exc, cls):
            return reason
    if isinstance(exc, jwt_errors.DecodeError):
        return f"malformed token ({str(exc)[:80]})"
    return f"invalid token ({type(exc).__name__}: {str(exc)[:80]})"


class JwtAuthenticator:
    """``authenticate(token) -> Identity | None`` verifying signed JWTs (see the module doc).

    Give exactly one of ``secret`` (HS256, at least 32 bytes) or ``public_key`` (PEM bytes or
    text of an RSA/EC public key or certificate, or a ``cryptography`` public key object).
    ``audience`` (one or several accepted values) and ``issuer`` are required to match when
    set; when ``audience`` is not set, a token that carries ``aud`` is refused (RFC 7519).
    ``leeway``: seconds of clock skew tolerated for ``nbf``/``iat``.
    """

    def __init__(
        self,
        *,
        secret: bytes | str | None = None,
        public_key: bytes | str | PublicKey | None = None,
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        leeway: float = DEFAULT_LEEWAY,
    ) -> None:
        if (secret is None) == (public_key is None):
            raise AuthConfigError("give exactly one of a JWT secret or a JWT public key")
        if not (math.isfinite(leeway) and 0 <= leeway <= 300):
            raise AuthConfigError(f"leeway must be 0..300 seconds, not {leeway!r}")
        self._key: bytes | PublicKey
        if secret is not None:
            self._key = _check_secret(_as_secret(secret))
            self.algorithm = "HS256"
        else:
            assert public_key is not None
            if isinstance(public_key, str | bytes):
                data = public_key.encode() if isinstance(public_key, str) else public_key
                key = _public_key_from_pem(data, "the JWT public key")
            elif isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                key = _public_key_from_pem(
                    public_key.public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo,
                    ),
                    "the JWT public key",
                )
            else:
                raise AuthConfigError(
                    f"unsupported JWT public key type {type(public_key).__name__}"
                )
            self._key = key
            self.algorithm = _algorithm_of(key)
        if isinstance(audience, str):
            audience = [audience]
        self.audience: list[str] | None = list(audience) if audience is not None else None
        if self.audience is not None and (
            not self.audience or not all(isinstance(a, str) and a for a in self.audience)
        ):
            raise AuthConfigError("the JWT audience must be one or more non-empty strings")
        if issuer is not None and (not isinstance(issuer, str) or not issuer):
            raise AuthConfigError("the JWT issuer must be a non-empty string")
        self.issuer = issuer
        self.leeway = float(leeway)

    @classmethod
    def from_secret_file(cls, path: str | os.PathLike[str], **options: Any) -> JwtAuthenticator:
        """An HS256 authenticator with the secret in ``path`` (see :func:`load_secret_file`)."""
        return cls(secret=load_secret_file(path), **options)

    @classmethod
    def from_public_key_file(cls, path: str | os.PathLike[str], **options: Any) -> JwtAuthenticator:
        """An RS256/ES256 authenticator with the PEM public key (or certificate) in ``path``."""
        return cls(public_key=load_public_key_file(path), **options)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The only algorithms a token may use: the one of the configured key."""
        return (self.algorithm,)

    def verify(self, token: object, *, now: float | None = None) -> Identity:
        """The identity of a valid ``token``; raises :class:`TokenRefused` with the reason."""
        if not isinstance(token, str) or not token:
            raise TokenRefused("no token")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRefused(f"token longer than {MAX_TOKEN_CHARS} characters")
        try:
            claims = jwt.decode(
                token,
                self._key,  # bytes, or a cryptography public key object
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": ["exp", "sub"],
                    # exp is checked below, exactly (the connection is closed at exp).
                    "verify_exp": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt_errors.PyJWTError as exc:
            raise TokenRefused(_reason(exc)) from None
        user_id = _check_user_id(claims.get("sub"))
        try:
            exp = _exp_of(claims)
            if exp <= (time.time() if now is None else now):
                raise TokenRefused("expired")
            if INSTANCES_CLAIM in claims:
                try:
                    validate_instances_claim(claims[INSTANCES_CLAIM])
                except ValueError as exc:
                    raise TokenRefused(f"malformed claim: {exc}") from None
        except TokenRefused as exc:
            raise TokenRefused(f"{exc.reason} (sub={user_id!r})") from None
        return Identity(user_id=user_id, claims=claims, expires_at=exp)

    def __call__(self, token: str | None) -> Identity | None:
        try:
            return self.verify(token)
        except TokenRefused as exc:
            log.info("refused a JWT: %s", exc.reason)
        except Exception as exc:  # a hostile token must not become a traceback in the log
            log.warning("refused a JWT: verification failed (%s)", type(exc).__name__)
        return None

    def __repr__(self) -> str:
        return (
            f"JwtAuthenticator(algorithm={self.algorithm!r}, audience={self.audience!r}, "
            f"issuer={self.issuer!r}, leeway={self.leeway:g})"
        )


# -- minting ---------------------------------------------------------------------------------


def _private_key(key: Any, algorithm: str) -> Any:
    if isinstance(key, str | bytes):
        data = key.encode() if isinstance(key, str) else key
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise AuthConfigError(f"the private key is not an unencrypted PEM key: {exc}") from None
    want = rsa.RSAPrivateKey if algorithm.startswith(("RS", "PS")) else ec.EllipticCurvePrivateKey
    if not isinstance(key, want):
        raise AuthConfigError(f"a {type(key).__name__} cannot sign {algorithm}")
    return key


def mint_token(
    secret: bytes | str | None,
    user_id: str,
    *,
    instances: Sequence[str] | None = None,
    ttl: float = 3600.0,
    claims: Mapping[str, Any] | None = None,
    algorithm: str = "HS256",
    private_key: Any = None,
) -> str:
    """A signed JWT for ``user_id`` (``sub``) valid for ``ttl`` seconds (``iat``, ``exp``).

    ``instances``: the instance ids (or ``prefix*``) it opens (default: no restriction).
    ``claims``: more claims (``aud``, ``iss``, ...; they may override ``iat``/``exp``, not
    ``sub``). HS256 signs with ``secret`` (at least 32 bytes); RS256/ES256 with
    ``private_key`` (PEM bytes/text or a ``cryptography`` private key; ``secret`` unused).
    For tests, the demo and ``synced-store token``; production tokens come from your login
    service.
    """
    try:
        _check_user_id(user_id)
    except TokenRefused as exc:
        raise ValueError(f"invalid user id {user_id!r:.40}: {exc.reason}") from None
    if not math.isfinite(ttl):
        raise ValueError("ttl must be a finite number of seconds")
    extra = dict(claims or {})
    if "sub" in extra:
        raise ValueError("pass the user id as user_id, not as a 'sub' claim")
    now = time.time()
    payload: dict[str, Any] = {"sub": user_id, "iat": int(now), "exp": math.ceil(now + ttl)}
    if instances is not None:
        if INSTANCES_CLAIM in extra:
            raise ValueError(f"give either instances= or an '{INSTANCES_CLAIM}' claim")
        payload[INSTANCES_CLAIM] = validate_instances_claim(list(instances))
    payload.update(extra)
    if algorithm == "HS256":
        if secret is None:
            raise AuthConfigError("HS256 needs a secret")
        key: Any = _check_secret(_as_secret(secret))
    elif algorithm in ("RS256", "ES256", "ES384", "ES512"):
        if private_key is None:
            raise AuthConfigError(f"{algorithm} needs private_key=")
        key = _private_key(private_key, algorithm)
    else:
        raise AuthConfigError(f"unsupported algorithm {algorithm!r} (HS256, RS256, ES256)")
    return jwt.encode(payload, key, algorithm=algorithm)


# -- what `serve` calls ----------------------------------------------------------------------


def authenticator_from_options(
    *,
    jwt_secret_file: str | os.PathLike[str] | None = None,
    jwt_public_key_file: str | os.PathLike[str] | None = None,
    jwt_audience: str | Sequence[str] | None = None,
    jwt_issuer: str | None = None,
    jwt_leeway: float = DEFAULT_LEEWAY,
) -> JwtAuthenticator | None:
    """The authenticator of ``serve``'s ``--jwt-*`` options, or None when no key is given
    (development auth). Raises :class:`AuthConfigError` with a message for ``Error: ...``:
    both key options, ``--jwt-audience``/``--jwt-issuer`` without a key, an unreadable,
    short or wrong key file. Keys are read now, so a bad one fails before the server starts.
    """
    if jwt_secret_file is not None and jwt_public_key_file is not None:
        raise AuthConfigError("give --jwt-secret-file or --jwt-public-key-file, not both")
    options: dict[str, Any] = {"audience": jwt_audience or None, "issuer": jwt_issuer or None}
    options["leeway"] = jwt_leeway
    if jwt_secret_file is not None:
        return JwtAuthenticator.from_secret_file(jwt_secret_file, **options)
    if jwt_public_key_file is not None:
        return JwtAuthenticator.from_public_key_file(jwt_public_key_file, **options)
    if jwt_audience or jwt_issuer:
        raise AuthConfigError(
            "--jwt-audience and --jwt-issuer need --jwt-secret-file or --jwt-public-key-file"
        )
    return None


def is_loopback_host(host: str) -> bool:
    """True if listening on ``host`` accepts only local connections (127.0.0.0/8, ::1,
    ``localhost``). ``0.0.0.0``, ``::`` and ``""`` (every interface) are not."""
    h = host.strip().strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        addr = ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def check_dev_auth_host(host: str, insecure_dev_auth: bool) -> None:
    """Refuse development auth (the token is the user id) on a non-loopback ``host`` unless
    ``insecure_dev_auth``: raises :class:`AuthConfigError`. Call it only when no
    authenticator (JWT or ``--auth``) is configured."""
    if insecure_dev_auth or is_loopback_host(host):
        return
    raise AuthConfigError(
        f"refusing to listen on {host!r} with INSECURE development authentication (the token "
        "is the user id, so anyone can act as anyone). Use --jwt-secret-file F or "
        "--jwt-public-key-file F (or --auth MODULE:ATTR); or --host 127.0.0.1; or pass "
        "--insecure-dev-auth to accept the risk."
    )
