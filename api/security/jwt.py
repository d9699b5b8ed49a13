"""The one module that uses python-jose. Every decode states its algorithms, requires exp and iat,
checks audience and issuer, bounds the token's lifetime (`exp - iat`), refuses `iat`/`nbf` ahead of
now beyond the clock skew, and refuses anything that is not a three-part JWS (JWE included)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from jose import jwk, jwt
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError

LOCAL_ALGORITHMS = ["HS256"]
ASYMMETRIC_ALGORITHMS = ["RS256", "ES256"]
_REQUIRED = {
    "require_exp": True,
    "require_iat": True,
    "require_aud": True,
    "require_iss": True,
    "require_sub": True,
    "verify_exp": True,
    "verify_nbf": True,
    "verify_aud": True,
    "verify_iss": True,
}


class TokenError(Exception):
    """Any reason a token is not accepted; the message is safe to show the caller."""


def issue(claims: dict[str, Any], *, secret: str, ttl: int, audience: str, issuer: str) -> str:
    now = int(time.time())
    body = {**claims, "aud": audience, "iss": issuer, "iat": now, "nbf": now, "exp": now + ttl}
    return jwt.encode(body, secret, algorithm="HS256")


def _header(token: str) -> dict[str, Any]:
    if token.count(".") != 2:
        raise TokenError("not a signed JWT (encrypted or malformed tokens are refused)")
    try:
        return jwt.get_unverified_header(token)
    except JOSEError as err:
        raise TokenError("malformed token") from err


def _times(token: str) -> tuple[int | None, int | None]:
    try:
        claims = jwt.get_unverified_claims(token)
    except JOSEError as err:
        raise TokenError("malformed token") from err
    issued, expires = claims.get("iat"), claims.get("exp")
    return (issued if isinstance(issued, int) else None), (expires if isinstance(expires, int) else None)


def half_spent(token: str, now: float) -> bool:
    """Whether a token (already verified) is past the middle of its life: time to issue a fresh one."""
    issued, expires = _times(token)
    return issued is not None and expires is not None and now > (issued + expires) / 2


def seconds_left(token: str, now: float) -> int:
    """How long a token (already verified) stays valid."""
    _, expires = _times(token)
    return max(0, int(expires - now)) if expires is not None else 0


def unverified_issuer(token: str) -> str | None:
    _header(token)
    try:
        iss = jwt.get_unverified_claims(token).get("iss")
    except JOSEError as err:
        raise TokenError("malformed token") from err
    return iss if isinstance(iss, str) else None


def verify_hs256(
    token: str, *, secret: str | None, audience: str, issuer: str, max_lifetime: int, skew: int
) -> dict[str, Any]:
    header = _header(token)
    if header.get("alg") not in LOCAL_ALGORITHMS:
        raise TokenError("token algorithm not accepted")
    if not secret:
        raise TokenError("token signature or format invalid")
    return _decode(token, secret, LOCAL_ALGORITHMS, audience, issuer, max_lifetime=max_lifetime, skew=skew)


def _decode(
    token: str, key: Any, algorithms: list[str], audience: str, issuer: str, *, max_lifetime: int, skew: int
) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token, key, algorithms=algorithms, audience=audience, issuer=issuer, options={**_REQUIRED, "leeway": skew}
        )
    except ExpiredSignatureError as err:
        raise TokenError("token expired") from err
    except JWTClaimsError as err:
        raise TokenError(f"token claims rejected: {err}") from err
    except JOSEError as err:
        raise TokenError("token signature or format invalid") from err
    check_times(claims, max_lifetime=max_lifetime, skew=skew, now=time.time())
    return claims


def check_times(claims: dict[str, Any], *, max_lifetime: int, skew: int, now: float) -> None:
    """`exp` and `iat` are numbers; `iat`/`nbf` not ahead of now beyond `skew`; `exp - iat` within bound.

    python-jose checks `exp` and `nbf` against the clock, but takes numeric strings and says nothing
    about `iat` in the future or about how long a token lives: a token minted with the secret for
    ten years, or dated tomorrow, would pass it."""
    times = {}
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if value is None and name == "nbf":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TokenError(f"token claims rejected: {name} must be a number")
        times[name] = value
    if times["iat"] > now + skew:
        raise TokenError("token claims rejected: issued in the future (iat)")
    if times.get("nbf", now) > now + skew:
        raise TokenError("token claims rejected: not valid yet (nbf)")
    if times["exp"] - times["iat"] > max_lifetime:
        raise TokenError(f"token claims rejected: lifetime (exp - iat) over {max_lifetime} s")


class JwksVerifier:
    """RS256/ES256 tokens checked against a JWKS (Supabase's asymmetric signing keys)."""

    def __init__(
        self, url: str, *, audience: str, issuer: str, max_lifetime: int, skew: int, ttl: float = 600.0
    ) -> None:
        self.url, self.audience, self.issuer, self.ttl = url, audience, issuer, ttl
        self.max_lifetime, self.skew = max_lifetime, skew
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched = float("-inf")  # never: time.monotonic() may start near 0 in a fresh container

    async def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._fetched < self.ttl:
            return
        if force and now - self._fetched < 10:  # an unknown kid cannot make us hammer the JWKS
            return
        async with httpx.AsyncClient(timeout=5) as client:
            resp = await client.get(self.url)
            resp.raise_for_status()
        self._keys = {k["kid"]: k for k in resp.json().get("keys", []) if "kid" in k}
        self._fetched = now

    async def verify(self, token: str) -> dict[str, Any]:
        header = _header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise TokenError("token algorithm not accepted")
        try:
            await self._refresh()
            if kid not in self._keys:
                await self._refresh(force=True)
        except (httpx.HTTPError, ValueError) as err:
            raise TokenError("signing keys are unavailable") from err
        data = self._keys.get(kid) if kid is not None else None
        if data is None or data.get("alg", alg) != alg:
            raise TokenError("unknown signing key")
        try:
            key = jwk.construct(data, alg)
        except JOSEError as err:
            raise TokenError("unusable signing key") from err
        return _decode(token, key, [alg], self.audience, self.issuer, max_lifetime=self.max_lifetime, skew=self.skew)
