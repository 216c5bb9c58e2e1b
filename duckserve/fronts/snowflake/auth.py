"""Who a Snowflake login is: a programmatic access token, or a key-pair JWT for a user with an
``RSA_PUBLIC_KEY``. Both end in the account's users and roles (``duckserve.engine``); this module
only reads the credential the driver sends.

A driver signs its JWT with the user's private key (RS256); the claims name the account and user
(``sub = ACCOUNT.USER``) and the public key's fingerprint (``iss = ACCOUNT.USER.SHA256:<fp>``),
which must be the fingerprint of the user's RSA_PUBLIC_KEY or RSA_PUBLIC_KEY_2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass

from duckserve.engine import access as A
from duckserve.engine.account import Account
from duckserve.engine.names import display
from duckserve.engine.tokens import TokenError, authenticate, role_restriction
from duckserve.errors import OperationalError

#: how far a JWT's iat/exp may be off this machine's clock
CLOCK_SKEW_SECONDS = 60
#: Snowflake refuses key-pair JWTs that live longer than an hour
MAX_JWT_LIFETIME_SECONDS = 3600


class LoginRefused(OperationalError):
    """A login's credential does not authenticate; ``code`` is the Snowflake error code drivers know."""

    def __init__(self, message: str, code: str = "390100") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Identity:
    """An authenticated login: the user, the role its credential allows (None: any of the user's
    roles) and how it authenticated."""

    user: str
    role_restriction: str | None
    default_role: str | None
    method: str          # PROGRAMMATIC_ACCESS_TOKEN or SNOWFLAKE_JWT
    secret: str | None = None   # the token, to check it again while the session lives


def _same_user(account: Account, login_name: str, user: str) -> None:
    if login_name and login_name.upper() != user.upper() and login_name != user:
        raise LoginRefused(f"Incorrect username or password was specified: the token belongs to user "
                           f"{display(user)}, not {login_name}")


def by_token(account: Account, login_name: str, secret: str) -> Identity:
    """A programmatic access token (also accepted where a driver sends it as the password)."""
    try:
        user, role = authenticate(account, secret)
    except TokenError as exc:
        raise LoginRefused(f"Incorrect username or password was specified: {exc}") from exc
    _same_user(account, login_name, user)
    return Identity(user, role_restriction(account, secret), role, "PROGRAMMATIC_ACCESS_TOKEN", secret)


def still_valid(account: Account, identity: Identity) -> None:
    """Raise LoginRefused when the credential a session logged in with no longer authenticates:
    a removed or expired token, a dropped or disabled user."""
    if identity.secret is not None:
        try:
            authenticate(account, identity.secret)
        except TokenError as exc:
            raise LoginRefused(f"the session's programmatic access token no longer authenticates: {exc}",
                               "390104") from exc
        return
    user = account.catalog.get(A.USER, identity.user)
    if user is None or user.props.get("disabled"):
        raise LoginRefused(f"user {display(identity.user)} was dropped or disabled: log in again", "390104")


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_key_der(text: str) -> bytes:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip() and "-----" not in line]
    return base64.b64decode("".join(lines).replace(" ", ""))


def fingerprint(public_key: str) -> str:
    """``SHA256:<base64>`` of a public key as CREATE USER ... RSA_PUBLIC_KEY takes it (PEM body)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(_public_key_der(public_key)).digest()).decode("ascii")


def by_jwt(account: Account, login_name: str, token: str) -> Identity:
    """A key-pair JWT: RS256-signed with the private key whose public half the user holds."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    def refuse(reason: str) -> LoginRefused:
        return LoginRefused(f"JWT token is invalid: {reason}", "390144")

    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(_b64url(header_b64))
        claims = json.loads(_b64url(claims_b64))
        signature = _b64url(signature_b64)
    except (ValueError, TypeError) as exc:
        raise refuse("it is not a signed JWT (header.claims.signature)") from exc
    if header.get("alg") != "RS256":
        raise refuse(f"algorithm {header.get('alg')!r}; key-pair authentication signs with RS256")
    subject = str(claims.get("sub", ""))
    user_name = subject.split(".", 1)[1] if "." in subject else subject
    if not user_name:
        raise refuse("its 'sub' claim does not name ACCOUNT.USER")
    user = account.catalog.get(A.USER, user_name) or account.catalog.get(A.USER, user_name.upper())
    if user is None:
        raise refuse(f"user {user_name} does not exist")
    _same_user(account, login_name, user.name)
    if user.props.get("disabled"):
        raise refuse(f"user {display(user.name)} is disabled")
    keys = [user.props.get(k) for k in ("rsa_public_key", "rsa_public_key_2") if user.props.get(k)]
    if not keys:
        raise refuse(f"user {display(user.name)} has no RSA_PUBLIC_KEY: run ALTER USER {display(user.name)} "
                     "SET RSA_PUBLIC_KEY = '<public key>'")
    issuer = str(claims.get("iss", ""))
    offered = issuer[issuer.find("SHA256:"):] if "SHA256:" in issuer else None
    now = time.time()
    try:
        issued, expires = float(claims["iat"]), float(claims["exp"])
    except (KeyError, TypeError, ValueError) as exc:
        raise refuse("it lacks the 'iat' and 'exp' claims") from exc
    if expires < now - CLOCK_SKEW_SECONDS:
        raise refuse("it has expired")
    if issued > now + CLOCK_SKEW_SECONDS or expires - issued > MAX_JWT_LIFETIME_SECONDS:
        raise refuse("its lifetime is not within an hour of now")
    for key_text in keys:
        try:
            if offered is not None and fingerprint(str(key_text)) != offered:
                continue
            key = serialization.load_der_public_key(_public_key_der(str(key_text)))
        except ValueError:
            continue
        if not isinstance(key, rsa.RSAPublicKey):
            continue
        try:
            key.verify(signature, f"{header_b64}.{claims_b64}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return Identity(user.name, None, user.props.get("default_role"), "SNOWFLAKE_JWT")
    raise refuse(f"it is not signed by the key of user {display(user.name)} (RSA_PUBLIC_KEY fingerprint "
                 f"{', '.join(fingerprint(str(k)) for k in keys)}; the token offers {offered})")
