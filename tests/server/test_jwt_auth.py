"""Signed-token authentication (JwtAuthenticator) — unit checks, and against a real server.

The server tests run uvicorn on 127.0.0.1 (``synced_store.testing``) with
``create_app(..., authenticate=JwtAuthenticator(...))`` and connect the real Python client:
every refused token ends the client with ``auth_failed`` (close code 4001) and creates no
instance file; a connection is closed with 4001 when its token expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import random
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table
from synced_store.client import connect
from synced_store.client.store import SyncedStoreClient
from synced_store.protocol.codes import CloseCode
from synced_store.protocol.version import PROTOCOL_VERSION
from synced_store.server.auth import Identity
from synced_store.server.jwt_auth import (
    DEFAULT_LEEWAY,
    AuthConfigError,
    JwtAuthenticator,
    authenticator_from_options,
    check_dev_auth_host,
    is_loopback_host,
    load_public_key_file,
    load_secret_file,
    mint_token,
)
from synced_store.testing import TestHarness, create_test_harness

TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))
SECRET = b"s3cret-" + b"x" * 57  # 64 bytes: enough for HS512 too (a refused algorithm here)
OTHER_SECRET = b"another-secret-" + b"y" * 49
ROOM = "room1"


# -- a tiny app: `whoami` records the server's ctx.user_id -----------------------------------


class Who(BaseModel):
    user: str


class Key(BaseModel):
    key: str


schema = define_schema(
    schema_version=1,
    tables={"who": table(Who)},
    mutators={"whoami": {"input": Key}},
)


async def whoami(ctx: Any, input: Key) -> None:
    await ctx.table("who").set(input.key, {"user": ctx.user_id})


backend = define_backend_config(schema=schema, mutators={"whoami": whoami})


# -- helpers ---------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def forge(header: dict[str, Any], payload: Any, sign: Callable[[bytes], bytes]) -> str:
    """A JWT built by hand (so tests can make what PyJWT refuses to make)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def hs256(key: bytes) -> Callable[[bytes], bytes]:
    return lambda msg: hmac.new(key, msg, hashlib.sha256).digest()


def tamper(token: str, **changes: Any) -> str:
    """``token`` with its payload changed and its signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(unb64(payload))
    claims.update(changes)
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def claims_now(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 600, **extra}


def rsa_keys() -> tuple[rsa.RSAPrivateKey, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private, public_pem(private)


def ec_keys() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    private = ec.generate_private_key(ec.SECP256R1())
    return private, public_pem(private)


def public_pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def private_pem(private: Any) -> bytes:
    return bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture
def hs() -> JwtAuthenticator:
    return JwtAuthenticator(secret=SECRET)


# -- keys and configuration ------------------------------------------------------------------


def test_secret_file_strips_one_trailing_newline_and_needs_32_bytes(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_bytes(b"a" * 32 + b"\n")
    assert load_secret_file(f) == b"a" * 32
    f.write_bytes(b"a" * 32 + b"\r\n")
    assert load_secret_file(f) == b"a" * 32
    f.write_bytes(b"a" * 31 + b"\n")
    with pytest.raises(AuthConfigError, match="31 bytes; HS256 needs at least 32"):
        load_secret_file(f)
    f.write_bytes(b"")
    with pytest.raises(AuthConfigError, match="0 bytes"):
        load_secret_file(f)
    with pytest.raises(AuthConfigError, match=r"cannot read JWT secret file .*missing"):
        load_secret_file(tmp_path / "missing")
    with pytest.raises(AuthConfigError, match="at least 32"):
        JwtAuthenticator(secret=b"short")


def test_a_pem_key_is_refused_as_a_secret(tmp_path: Path) -> None:
    _, pem = rsa_keys()
    f = tmp_path / "secret"
    f.write_bytes(pem)
    with pytest.raises(AuthConfigError, match="looks like a PEM"):
        load_secret_file(f)


def test_public_key_files_are_checked(tmp_path: Path) -> None:
    private, pem = rsa_keys()
    f = tmp_path / "key.pem"
    f.write_bytes(pem)
    assert isinstance(load_public_key_file(f), rsa.RSAPublicKey)
    f.write_bytes(private_pem(private))
    with pytest.raises(AuthConfigError, match="private key"):
        load_public_key_file(f)
    f.write_bytes(b"not a key")
    with pytest.raises(AuthConfigError, match="not a PEM public key"):
        load_public_key_file(f)
    f.write_bytes(public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    with pytest.raises(AuthConfigError, match="1024-bit RSA key"):
        load_public_key_file(f)
    f.write_bytes(public_pem(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(AuthConfigError, match="supported are RSA"):
        load_public_key_file(f)
    with pytest.raises(AuthConfigError, match="exactly one"):
        JwtAuthenticator()
    with pytest.raises(AuthConfigError, match="exactly one"):
        JwtAuthenticator(secret=SECRET, public_key=pem)


def test_the_key_alone_decides_the_algorithm() -> None:
    assert JwtAuthenticator(secret=SECRET).algorithms == ("HS256",)
    assert JwtAuthenticator(public_key=rsa_keys()[1]).algorithms == ("RS256",)
    assert JwtAuthenticator(public_key=ec_keys()[1]).algorithms == ("ES256",)
    assert JwtAuthenticator(public_key=ec_keys()[0].public_key()).algorithms == ("ES256",)


def test_authenticator_from_options(tmp_path: Path) -> None:
    secret, key = tmp_path / "secret", tmp_path / "key.pem"
    secret.write_bytes(SECRET + b"\n")
    key.write_bytes(ec_keys()[1])
    assert authenticator_from_options() is None
    a = authenticator_from_options(jwt_secret_file=secret, jwt_audience="app", jwt_issuer="me")
    assert a is not None
    assert a.algorithms == ("HS256",)
    assert (a.audience, a.issuer, a.leeway) == (["app"], "me", DEFAULT_LEEWAY)
    b = authenticator_from_options(jwt_public_key_file=key, jwt_leeway=0)
    assert b is not None
    assert b.algorithms == ("ES256",)
    assert b.leeway == 0
    with pytest.raises(AuthConfigError, match="not both"):
        authenticator_from_options(jwt_secret_file=secret, jwt_public_key_file=key)
    with pytest.raises(AuthConfigError, match="need --jwt-secret-file"):
        authenticator_from_options(jwt_audience="app")
    (tmp_path / "short").write_text("short\n")
    with pytest.raises(AuthConfigError, match="at least 32"):
        authenticator_from_options(jwt_secret_file=tmp_path / "short")
    with pytest.raises(AuthConfigError, match="leeway"):
        authenticator_from_options(jwt_secret_file=secret, jwt_leeway=-1)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"]
)
def test_dev_auth_is_allowed_on_loopback(host: str) -> None:
    assert is_loopback_host(host)
    check_dev_auth_host(host, insecure_dev_auth=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.5", "10.0.0.1", "example.com"])
def test_dev_auth_is_refused_elsewhere_unless_insecure_dev_auth(host: str) -> None:
    assert not is_loopback_host(host)
    with pytest.raises(AuthConfigError, match="--insecure-dev-auth"):
        check_dev_auth_host(host, insecure_dev_auth=False)
    check_dev_auth_host(host, insecure_dev_auth=True)


# -- verification ----------------------------------------------------------------------------


def test_a_valid_token_gives_its_identity(hs: JwtAuthenticator) -> None:
    token = mint_token(SECRET, "alice", instances=["room1", "team-*"], claims={"role": "admin"})
    identity = hs(token)
    assert isinstance(identity, Identity)
    assert identity.user_id == "alice"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert identity.claims == claims
    assert identity.claims["instances"] == ["room1", "team-*"]
    assert identity.claims["role"] == "admin"
    assert identity.expires_at == claims["exp"]
    assert 3599 <= identity.expires_at - time.time() <= 3601


REFUSED_TOKENS: dict[str, Callable[[], str]] = {
    "tampered payload": lambda: tamper(mint_token(SECRET, "alice"), sub="mallory"),
    "tampered instances": lambda: tamper(
        mint_token(SECRET, "alice", instances=["a"]), instances=["*"]
    ),
    "tampered exp": lambda: tamper(
        mint_token(SECRET, "alice", ttl=-60), exp=int(time.time()) + 600
    ),
    "other secret": lambda: mint_token(OTHER_SECRET, "alice"),
    "alg none": lambda: forge({"alg": "none", "typ": "JWT"}, claims_now(), lambda _: b""),
    "alg None, signed": lambda: forge({"alg": "None"}, claims_now(), hs256(SECRET)),
    "HS512 with the secret": lambda: jwt.encode(claims_now(), SECRET, algorithm="HS512"),
    "no alg": lambda: forge({"typ": "JWT"}, claims_now(), hs256(SECRET)),
    "expired": lambda: mint_token(SECRET, "alice", ttl=-1),
    "no exp": lambda: jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),
    "exp null": lambda: jwt.encode(claims_now(exp=None), SECRET, algorithm="HS256"),
    "exp not a number": lambda: jwt.encode(claims_now(exp="soon"), SECRET, algorithm="HS256"),
    "exp true": lambda: jwt.encode(claims_now(exp=True), SECRET, algorithm="HS256"),
    "exp too large": lambda: jwt.encode(claims_now(exp=10**400), SECRET, algorithm="HS256"),
    "exp infinite": lambda: forge({"alg": "HS256"}, claims_now(exp=float("inf")), hs256(SECRET)),
    "no sub": lambda: jwt.encode({"exp": time.time() + 60}, SECRET, algorithm="HS256"),
    "empty sub": lambda: jwt.encode(claims_now(sub=""), SECRET, algorithm="HS256"),
    "sub with /": lambda: jwt.encode(claims_now(sub="a/b"), SECRET, algorithm="HS256"),
    "sub too long": lambda: jwt.encode(claims_now(sub="a" * 129), SECRET, algorithm="HS256"),
    "sub not a string": lambda: jwt.encode(claims_now(sub=42), SECRET, algorithm="HS256"),
    "nbf in the future": lambda: jwt.encode(
        claims_now(nbf=int(time.time()) + 120), SECRET, algorithm="HS256"
    ),
    "iat in the future": lambda: jwt.encode(
        claims_now(iat=int(time.time()) + 120), SECRET, algorithm="HS256"
    ),
    "aud not configured": lambda: mint_token(SECRET, "alice", claims={"aud": "someone"}),
    "instances a string": lambda: mint_token(SECRET, "alice", claims={"instances": "room1"}),
    "instances null": lambda: mint_token(SECRET, "alice", claims={"instances": None}),
    "instances an object": lambda: mint_token(SECRET, "alice", claims={"instances": {"a": 1}}),
    "instances of numbers": lambda: mint_token(SECRET, "alice", claims={"instances": [1]}),
    "instances with an empty id": lambda: mint_token(SECRET, "alice", claims={"instances": [""]}),
    "instances with an inner *": lambda: mint_token(SECRET, "alice", claims={"instances": ["a*b"]}),
    "garbage": lambda: "not-a-token",
    "two segments": lambda: "eyJhbGciOiJIUzI1NiJ9.e30",
    "bad base64": lambda: "@@@.@@@.@@@",
    "header not an object": lambda: f"{b64(b'[1]')}.{b64(b'{}')}.{b64(b'x')}",
    "payload not an object": lambda: forge({"alg": "HS256"}, [], hs256(SECRET)),
    "huge": lambda: "a" * 20_000,
    "empty": lambda: "",
}


@pytest.mark.parametrize("name", list(REFUSED_TOKENS))
def test_bad_tokens_are_refused(
    hs: JwtAuthenticator, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = REFUSED_TOKENS[name]()
    with caplog.at_level(logging.INFO, logger="synced_store"):
        assert hs(token) is None
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused a JWT")]
    assert len(refusals) == 1, caplog.text  # logged once ...
    assert refusals[0].levelno == logging.INFO
    if len(token) > 20:
        assert token not in caplog.text  # ... never with the token
        sig = token.rsplit(".", 1)[-1]
        assert len(sig) < 16 or sig not in caplog.text


def test_mangled_tokens_are_refused_without_a_traceback(
    hs: JwtAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of random edits of a valid token: each one verifies to the same identity
    (base64 has a few don't-care bits) or is refused at INFO, never an exception."""
    rng = random.Random(1234)
    good = mint_token(SECRET, "alice", instances=["room1"])
    alphabet = string.ascii_letters + string.digits + "-_.=+/ \x00é"
    with caplog.at_level(logging.INFO, logger="synced_store"):
        for _ in range(3000):
            chars = list(good)
            for _ in range(rng.randint(1, 4)):
                op = rng.random()
                i = rng.randrange(len(chars))
                if op < 0.6:
                    chars[i] = rng.choice(alphabet)
                elif op < 0.8:
                    del chars[i]
                else:
                    chars.insert(i, rng.choice(alphabet))
            identity = hs("".join(chars))
            assert identity is None or (
                identity.user_id == "alice" and identity.claims["instances"] == ["room1"]
            )
    assert all(r.levelno == logging.INFO for r in caplog.records), caplog.text


def test_refusal_reasons_are_logged(hs: JwtAuthenticator, caplog: pytest.LogCaptureFixture) -> None:
    cases = {
        "expired": mint_token(SECRET, "alice", ttl=-5),
        "bad signature": mint_token(OTHER_SECRET, "alice"),
        "missing exp": jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),
        "missing sub": jwt.encode({"exp": time.time() + 60}, SECRET, algorithm="HS256"),
        "algorithm not allowed": forge({"alg": "none"}, claims_now(), lambda _: b""),
        "not yet valid": jwt.encode(claims_now(nbf=time.time() + 120), SECRET, algorithm="HS256"),
        "wrong audience": mint_token(SECRET, "alice", claims={"aud": "x"}),
        "malformed claim: 'instances' must be a list": mint_token(
            SECRET, "alice", claims={"instances": "room1"}
        ),
        "no token": "",
    }
    for reason, token in cases.items():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="synced_store"):
            assert hs(token) is None
        assert f"refused a JWT: {reason}" in caplog.text, (reason, caplog.text)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="synced_store"):
        assert hs(None) is None
    assert "refused a JWT: no token" in caplog.text


def test_the_user_id_is_logged_only_once_the_signature_holds(
    hs: JwtAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="synced_store"):
        hs(mint_token(SECRET, "alice", ttl=-5))
        hs(mint_token(OTHER_SECRET, "mallory"))
    assert "refused a JWT: expired (sub='alice')" in caplog.text
    assert "mallory" not in caplog.text


def test_key_confusion_hs256_signed_with_the_public_key_is_refused() -> None:
    """The classic attack: the server's public key (which is public) used as an HMAC secret."""
    for _, pem in (rsa_keys(), ec_keys()):
        auth = JwtAuthenticator(public_key=pem)
        for key in (pem, pem.strip(), pem.decode().replace("\n", "\r\n").encode()):
            forged = forge({"alg": "HS256", "typ": "JWT"}, claims_now(), hs256(key))
            assert auth(forged) is None
        forged = forge({"alg": "none"}, claims_now(), lambda _: b"")
        assert auth(forged) is None


def test_rs256_and_es256_verify_with_their_public_keys() -> None:
    (rsa_private, rsa_pem), (ec_private, ec_pem) = rsa_keys(), ec_keys()
    rs, es = JwtAuthenticator(public_key=rsa_pem), JwtAuthenticator(public_key=ec_pem)
    rs_token = mint_token(None, "alice", algorithm="RS256", private_key=rsa_private)
    es_token = mint_token(None, "bob", algorithm="ES256", private_key=private_pem(ec_private))
    identity = rs(rs_token)
    assert identity is not None
    assert identity.user_id == "alice"
    identity = es(es_token)
    assert identity is not None
    assert identity.user_id == "bob"
    # Each key accepts only its own algorithm, and only tokens signed by its private key.
    assert rs(es_token) is None
    assert es(rs_token) is None
    assert rs(mint_token(None, "x", algorithm="RS256", private_key=rsa_keys()[0])) is None
    assert es(mint_token(SECRET, "alice")) is None
    assert rs(tamper(rs_token, sub="mallory")) is None
    assert es(tamper(es_token, sub="mallory")) is None


def test_audience_and_issuer_are_checked_when_configured() -> None:
    auth = JwtAuthenticator(secret=SECRET, audience=["chat", "chat-web"], issuer="login")
    ok = {"aud": "chat-web", "iss": "login"}
    assert auth(mint_token(SECRET, "alice", claims=ok)) is not None
    assert auth(mint_token(SECRET, "alice", claims={**ok, "aud": ["x", "chat"]})) is not None
    assert auth(mint_token(SECRET, "alice", claims={**ok, "aud": "other"})) is None
    assert auth(mint_token(SECRET, "alice", claims={**ok, "iss": "evil"})) is None
    assert auth(mint_token(SECRET, "alice", claims={"aud": "chat"})) is None  # no iss
    assert auth(mint_token(SECRET, "alice", claims={"iss": "login"})) is None  # no aud


def test_leeway_tolerates_a_slightly_fast_issuer_clock_but_not_expiry() -> None:
    now = int(time.time())
    auth = JwtAuthenticator(secret=SECRET)  # the default leeway
    soon = jwt.encode(claims_now(nbf=now + 5, iat=now + 5), SECRET, algorithm="HS256")
    assert auth(soon) is not None
    assert JwtAuthenticator(secret=SECRET, leeway=0)(soon) is None
    # exp is exact: one second past it, the token is refused whatever the leeway.
    late = jwt.encode(claims_now(exp=now - 1), SECRET, algorithm="HS256")
    assert JwtAuthenticator(secret=SECRET, leeway=60)(late) is None


def test_valid_instances_claims_are_accepted(hs: JwtAuthenticator) -> None:
    for instances in ([], ["room1"], ["team-*", "room1"], ["*"]):
        identity = hs(mint_token(SECRET, "alice", instances=instances))
        assert identity is not None
        assert identity.claims["instances"] == instances


def test_mint_token_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="invalid user id"):
        mint_token(SECRET, "a/b")
    with pytest.raises(ValueError, match="invalid user id"):
        mint_token(SECRET, "")
    with pytest.raises(AuthConfigError, match="at least 32"):
        mint_token(b"short", "alice")
    with pytest.raises(ValueError, match="list of non-empty strings"):
        mint_token(SECRET, "alice", instances=[""])
    with pytest.raises(ValueError, match="not as a 'sub' claim"):
        mint_token(SECRET, "alice", claims={"sub": "bob"})
    with pytest.raises(AuthConfigError, match="needs private_key"):
        mint_token(None, "alice", algorithm="RS256")
    with pytest.raises(AuthConfigError, match="cannot sign RS256"):
        mint_token(None, "alice", algorithm="RS256", private_key=ec_keys()[0])
    with pytest.raises(AuthConfigError, match="unsupported algorithm"):
        mint_token(SECRET, "alice", algorithm="none")


# -- against a real server -------------------------------------------------------------------


Start = Callable[..., Awaitable[TestHarness]]


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[Start]:
    """Start real servers (uvicorn on 127.0.0.1) with the given ``create_app`` options."""
    started: list[TestHarness] = []

    async def start(**app_options: Any) -> TestHarness:
        h = await create_test_harness(
            backend, data_dir=tmp_path / f"data{len(started)}", **app_options
        )
        # The client logs its terminal end at ERROR; nothing else may be logged at ERROR.
        h.allowed_errors.append("session ended by the server (auth_failed)")
        started.append(h)
        return h

    yield start
    for h in started:
        await h.dispose()


async def open_client(
    h: TestHarness, token: str | None, instance_id: str = ROOM
) -> SyncedStoreClient:
    client = await connect(
        h.url,
        backend,
        instance_id=instance_id,
        token=token,
        user_id="a-guess",  # the server's `connected` frame says who we are
        reconnect_delay=(0.005, 0.05),
    )
    h.clients.append(client)
    return client


async def outcome(client: SyncedStoreClient) -> str:
    """``"connected"`` or the client's end reason, whichever comes first."""
    await client.wait_until(
        lambda: client.end_reason is not None or client.has_server_data, timeout=TIMEOUT
    )
    return client.end_reason or "connected"


def instance_files(h: TestHarness) -> list[str]:
    return sorted(p.name for p in Path(h.data_dir).glob("*.sqlite3*"))


async def test_a_valid_token_connects_as_its_sub(start_server: Start) -> None:
    h = await start_server(authenticate=JwtAuthenticator(secret=SECRET))
    client = await open_client(h, mint_token(SECRET, "alice"))
    assert await outcome(client) == "connected"
    assert client.user_id == "alice"  # from the server's `connected` frame
    res = await client.mutate.whoami(key="k")
    await res.confirmed
    assert await client.query(lambda ctx: ctx.table("who").get("k")) == {"user": "alice"}
    assert instance_files(h)[0] == f"{ROOM}.sqlite3"


@pytest.mark.parametrize(
    "name",
    [
        "tampered payload",
        "tampered instances",
        "tampered exp",
        "other secret",
        "alg none",
        "HS512 with the secret",
        "expired",
        "no exp",
        "exp not a number",
        "no sub",
        "sub with /",
        "instances a string",
        "instances null",
        "garbage",
        "empty",
    ],
)
async def test_refused_tokens_end_the_client_with_4001_and_create_nothing(
    start_server: Start, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = await start_server(authenticate=JwtAuthenticator(secret=SECRET))
    with caplog.at_level(logging.INFO, logger="synced_store.server"):
        client = await open_client(h, REFUSED_TOKENS[name]())
        assert await outcome(client) == "auth_failed"  # END_REASONS[4001]
    assert instance_files(h) == []
    assert ROOM not in h.app.state.registry.instances
    assert "refused a JWT" in caplog.text


async def test_no_token_at_all_is_refused(start_server: Start) -> None:
    h = await start_server(authenticate=JwtAuthenticator(secret=SECRET))
    client = await open_client(h, None)
    assert await outcome(client) == "auth_failed"
    assert instance_files(h) == []


async def raw_handshake(h: TestHarness, token: str | None) -> tuple[list[Any], int, str, float]:
    """Connect with a bare WebSocket; the frames received, the close code and reason, and
    when the close came."""
    frames: list[Any] = []
    async with websockets.connect(f"{h.url}/sync/{ROOM}", open_timeout=TIMEOUT) as ws:
        hello = {
            "type": "connect",
            "protocol_version": PROTOCOL_VERSION,
            "schema_version": schema.schema_version,
            "client_id": "raw-client",
            "token": token,
            "cookie": None,
            "last_mutation_id": 0,
        }
        await ws.send(json.dumps(hello))
        try:
            async for frame in ws:
                frames.append(json.loads(frame))
        except websockets.ConnectionClosed:
            pass
        closed_at = time.time()
        assert ws.close_code is not None
        return frames, ws.close_code, ws.close_reason or "", closed_at


async def test_refusal_is_close_code_4001_before_any_data(start_server: Start) -> None:
    h = await start_server(authenticate=JwtAuthenticator(secret=SECRET))
    frames, code, reason, _ = await raw_handshake(h, tamper(mint_token(SECRET, "a"), sub="b"))
    assert (code, reason) == (CloseCode.AUTH_FAILED, "authentication failed")
    # Only the error that announces the close: no `connected`, no data.
    assert frames == [{"type": "error", "kind": "auth_failed", "message": "authentication failed"}]
    assert instance_files(h) == []


async def test_a_connection_is_closed_with_4001_when_its_token_expires(start_server: Start) -> None:
    h = await start_server(authenticate=JwtAuthenticator(secret=SECRET))
    token = mint_token(SECRET, "alice", ttl=2)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    client = await open_client(h, token)
    assert await outcome(client) == "connected"
    await client.wait_until(lambda: client.end_reason is not None, timeout=exp - time.time() + 5)
    ended_at = time.time()
    assert client.end_reason == "auth_failed"
    assert exp - 0.1 <= ended_at <= exp + 2, (exp, ended_at)
    # The same with a bare socket, to see the code and reason on the wire.
    token = mint_token(SECRET, "alice", ttl=2)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    frames, code, reason, closed_at = await raw_handshake(h, token)
    assert frames[0]["type"] == "connected"
    assert frames[0]["user_id"] == "alice"
    assert (code, reason) == (CloseCode.AUTH_FAILED, "token expired")
    assert exp - 0.1 <= closed_at <= exp + 2, (exp, closed_at)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_public_key_tokens_over_a_real_server(start_server: Start, algorithm: str) -> None:
    private, pem = rsa_keys() if algorithm == "RS256" else ec_keys()
    h = await start_server(authenticate=JwtAuthenticator(public_key=pem))
    good = mint_token(None, "alice", algorithm=algorithm, private_key=private)
    client = await open_client(h, good)
    assert await outcome(client) == "connected"
    assert client.user_id == "alice"
    bad = [
        tamper(good, sub="mallory"),
        forge({"alg": "HS256", "typ": "JWT"}, claims_now(), hs256(pem)),  # key confusion
        forge({"alg": "none"}, claims_now(), lambda _: b""),
        mint_token(SECRET, "alice"),
    ]
    for i, token in enumerate(bad):
        c = await open_client(h, token, instance_id=f"other-{i}")
        assert await outcome(c) == "auth_failed", i
    assert not [f for f in instance_files(h) if f.startswith("other-")]


@pytest.mark.parametrize("expires_at", ["tomorrow", float("nan"), float("inf"), 10**400, True])
async def test_an_identity_with_a_bad_expiry_is_refused(
    start_server: Start, expires_at: Any
) -> None:
    """A custom authenticator's ``expires_at`` must be a Unix time (auth.authenticate_token)."""
    h = await start_server(authenticate=lambda token: Identity("alice", {}, expires_at))
    h.allowed_errors.append("authenticate() returned expires_at=")
    client = await open_client(h, "anything")
    assert await outcome(client) == "auth_failed"
    assert instance_files(h) == []
    assert any("not a Unix time" in m for m in h.error_logs)
