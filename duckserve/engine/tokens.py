"""Programmatic access tokens (PATs): how programs outside duckserve authenticate to a service's
HTTP endpoint.

``ALTER USER u ADD PROGRAMMATIC ACCESS TOKEN name`` returns a random secret once; the catalog keeps
only its SHA-256 hash (the secret carries 256 random bits, so a plain hash cannot be reversed or
guessed). A request presents the secret in its ``Authorization`` header, either in the form the
seed uses (``Snowflake Token="<secret>"``) or as ``Bearer <secret>``; ``authenticate`` turns it into
the user and the role the request runs as: the token's ROLE_RESTRICTION, else the user's default role.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from duckserve.engine import access as A
from duckserve.engine.account import Account, Session
from duckserve.engine.catalog import CatalogObject, now
from duckserve.engine.names import closest, display
from duckserve.engine.results import Rows
from duckserve.errors import (
    InsufficientPrivileges,
    ObjectExists,
    ObjectNotFound,
    OperationalError,
    ProgrammingError,
)

TOKEN_KIND = "PROGRAMMATIC ACCESS TOKEN"

#: Snowflake's defaults: a token lives 15 days unless DAYS_TO_EXPIRY says otherwise, at most 365
DEFAULT_DAYS_TO_EXPIRY = 15
MAX_DAYS_TO_EXPIRY = 365

#: a recognisable prefix lets secret scanners spot a leaked token; 32 random bytes follow
SECRET_PREFIX = "dspat_"

SHOW_COLUMNS = ("name", "user_name", "role_restriction", "expires_at", "status", "comment", "created_on")


class TokenError(OperationalError):
    """A presented token does not authenticate: unknown, removed, expired, its user dropped or
    disabled, or its role restriction no longer granted. Network endpoints answer it with 401."""


def how_to_get_a_token(user: str = "<user>") -> str:
    return (f"create a token with ALTER USER {user} ADD PROGRAMMATIC ACCESS TOKEN <name> "
            "and send it as 'Authorization: Snowflake Token=\"<secret>\"' or 'Authorization: Bearer <secret>'")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _key(user: str, name: str) -> str:
    return f"{user}/{name}"


def _user(account: Account, user: str) -> CatalogObject:
    obj = account.find(A.USER, user)
    assert obj is not None
    return obj


def _require_manage(account: Account, session: Session, user: CatalogObject, action: str) -> None:
    """A user manages its own tokens; otherwise the user's owner role or ACCOUNTADMIN."""
    if session.user == user.name:
        return
    try:
        account.require(session, user, (A.OWNERSHIP,), action)
    except InsufficientPrivileges as exc:
        raise InsufficientPrivileges(f"{exc}; or connect as user {display(user.name)}, "
                                     "who may manage its own tokens") from None


def _token_name(name: str, user: CatalogObject) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ProgrammingError(
            f"a programmatic access token of user {display(user.name)} needs a name: "
            f"ALTER USER {display(user.name)} ADD PROGRAMMATIC ACCESS TOKEN <name>"
        )
    if "/" in name:
        raise ProgrammingError(f"programmatic access token name {name!r} must not contain '/': choose another name")
    return name


def _days(value: int | None, user: CatalogObject, name: str) -> int:
    if value is None:
        return DEFAULT_DAYS_TO_EXPIRY
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS_TO_EXPIRY:
        raise ProgrammingError(
            f"programmatic access token {display(name)} of user {display(user.name)}: DAYS_TO_EXPIRY must be "
            f"a whole number from 1 to {MAX_DAYS_TO_EXPIRY}, got {value!r}"
        )
    return value


def _restricted_role(account: Account, user: CatalogObject, role: str, name: str) -> str:
    # a quoted role keeps its case; 'analyst' written as a string means the role ANALYST
    found = account.find(A.ROLE, role, missing_ok=True) or account.find(A.ROLE, role.upper())
    assert found is not None
    if found.name not in account.user_roles(user.name):
        raise ProgrammingError(
            f"programmatic access token {display(name)}: ROLE_RESTRICTION {display(found.name)} is not granted "
            f"to user {display(user.name)}: run GRANT ROLE {display(found.name)} TO USER {display(user.name)} "
            "(as ACCOUNTADMIN or the role's owner), or restrict the token to a role the user has"
        )
    return found.name


def add_token(account: Account, session: Session, user: str, name: str, role_restriction: str | None = None,
              days_to_expiry: int | None = None, comment: str | None = None) -> Rows:
    """ALTER USER u ADD PROGRAMMATIC ACCESS TOKEN name: the only time the secret is shown."""
    user_obj = _user(account, user)
    name = _token_name(name, user_obj)
    _require_manage(account, session, user_obj, f"add a programmatic access token to user {display(user_obj.name)}")
    days = _days(days_to_expiry, user_obj, name)
    role = _restricted_role(account, user_obj, role_restriction, name) if role_restriction else None
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    created = now()
    with account.catalog.transaction():
        if _live(account, user_obj, account.catalog.get(TOKEN_KIND, _key(user_obj.name, name))) is not None:
            raise ObjectExists(
                f"programmatic access token {display(name)} of user {display(user_obj.name)} already exists: "
                f"run ALTER USER {display(user_obj.name)} REMOVE PROGRAMMATIC ACCESS TOKEN {display(name)} first, "
                "or choose another name"
            )
        account.catalog.insert(CatalogObject(
            TOKEN_KIND, _key(user_obj.name, name), owner=session.role, created_on=created, updated_on=created,
            comment=comment,
            props={
                "user": user_obj.name, "token_name": name, "role_restriction": role,
                "secret_sha256": _digest(secret), "expires_at": (created + timedelta(days=days)).isoformat(),
                "comment": comment, "created_by": session.user,
                # a user dropped and created again under the same name must not inherit old tokens
                "user_created_on": user_obj.created_on.isoformat(),
            },
        ))
    return Rows(["token_name", "token_secret"], [(name, secret)])


def remove_token(account: Account, session: Session, user: str, name: str) -> Rows:
    """ALTER USER u REMOVE PROGRAMMATIC ACCESS TOKEN name."""
    user_obj = _user(account, user)
    _require_manage(account, session, user_obj,
                    f"remove a programmatic access token of user {display(user_obj.name)}")
    token = _live(account, user_obj, account.catalog.get(TOKEN_KIND, _key(user_obj.name, name)))
    if token is None:
        existing = [t.props["token_name"] for t in _tokens_of(account, user_obj)]
        hint = closest(name, existing)
        message = f"programmatic access token {display(name)} of user {display(user_obj.name)} does not exist"
        if hint:
            message += f"; did you mean {display(hint)}?"
        else:
            message += f"; list them with SHOW USER PROGRAMMATIC ACCESS TOKENS FOR USER {display(user_obj.name)}"
        raise ObjectNotFound(message)
    account.catalog.delete(token)
    return Rows.status(f"Programmatic access token {display(name)} successfully removed.")


def _live(account: Account, user: CatalogObject, token: CatalogObject | None) -> CatalogObject | None:
    """The token, unless it belonged to an earlier user of the same name (then it is deleted)."""
    if token is None:
        return None
    if token.props.get("user_created_on") != user.created_on.isoformat():
        account.catalog.delete(token)
        return None
    return token


def _tokens_of(account: Account, user: CatalogObject) -> list[CatalogObject]:
    found = []
    for token in account.catalog.objects(TOKEN_KIND):
        if token.props.get("user") == user.name and _live(account, user, token) is not None:
            found.append(token)
    return found


def _expires_at(token: CatalogObject) -> datetime:
    return datetime.fromisoformat(token.props["expires_at"])


def show_tokens(account: Account, session: Session, user: str | None = None) -> Rows:
    """SHOW USER PROGRAMMATIC ACCESS TOKENS [FOR USER u]: never the secret, nor its hash."""
    user_obj = _user(account, user or session.user)
    _require_manage(account, session, user_obj,
                    f"show the programmatic access tokens of user {display(user_obj.name)}")
    moment = now()
    records = []
    for token in _tokens_of(account, user_obj):
        expires = _expires_at(token)
        records.append({
            "name": token.props["token_name"], "user_name": user_obj.name,
            "role_restriction": token.props.get("role_restriction"), "expires_at": expires,
            "status": "EXPIRED" if expires <= moment else "ACTIVE", "comment": token.props.get("comment"),
            "created_on": token.created_on,
        })
    return Rows.of(SHOW_COLUMNS, records, {"role_restriction": "VARCHAR", "comment": "VARCHAR",
                                           "expires_at": "TIMESTAMPTZ", "created_on": "TIMESTAMPTZ",
                                           "name": "VARCHAR", "user_name": "VARCHAR", "status": "VARCHAR"})


def _find_by_secret(account: Account, secret: str) -> CatalogObject | None:
    digest = _digest(secret)
    found = None
    for token in account.catalog.objects(TOKEN_KIND):
        # compare every stored hash in constant time, and keep looping, so timing reveals nothing
        if hmac.compare_digest(str(token.props.get("secret_sha256", "")), digest):
            found = token
    return found


def authenticate(account: Account, secret: str) -> tuple[str, str]:
    """The (user, role) a token secret stands for; TokenError when it does not authenticate."""
    user, role, _ = authenticate_until(account, secret)
    return user, role


def authenticate_until(account: Account, secret: str) -> tuple[str, str, datetime]:
    """`authenticate`, plus the moment the token expires (an answer may be reused until then, as
    long as the catalog has not changed)."""
    if not isinstance(secret, str) or not secret:
        raise TokenError(f"no programmatic access token was presented: {how_to_get_a_token()}")
    token = _find_by_secret(account, secret)
    if token is None:
        raise TokenError(f"the programmatic access token is not valid (unknown or removed): {how_to_get_a_token()}")
    user_name, name = token.props["user"], token.props["token_name"]
    label = f"programmatic access token {display(name)} of user {display(user_name)}"
    expires = _expires_at(token)
    if expires <= now():
        raise TokenError(f"{label} expired at {expires.isoformat(timespec='seconds')}: "
                         f"{how_to_get_a_token(display(user_name))}")
    user = account.catalog.get(A.USER, user_name)
    if user is None or user.created_on.isoformat() != token.props.get("user_created_on"):
        raise TokenError(f"{label} is no longer valid: user {display(user_name)} was dropped")
    if user.props.get("disabled"):
        raise TokenError(f"{label} cannot be used: user {display(user_name)} is disabled; "
                         f"run ALTER USER {display(user_name)} SET DISABLED = FALSE")
    usable = account.user_roles(user.name)
    restriction = token.props.get("role_restriction")
    if restriction:
        if restriction not in usable or account.catalog.get(A.ROLE, restriction) is None:
            raise TokenError(
                f"{label} is restricted to role {display(restriction)}, which user {display(user_name)} no longer "
                f"has: run GRANT ROLE {display(restriction)} TO USER {display(user_name)}, or add a new token"
            )
        return user.name, restriction, expires
    default_role = user.props.get("default_role")
    if default_role and default_role in usable and account.catalog.get(A.ROLE, default_role) is not None:
        return user.name, default_role, expires
    return user.name, A.PUBLIC, expires


def role_restriction(account: Account, secret: str) -> str | None:
    """The ROLE_RESTRICTION of the token with this secret (None: unrestricted or unknown)."""
    token = _find_by_secret(account, secret) if isinstance(secret, str) and secret else None
    restriction = token.props.get("role_restriction") if token is not None else None
    return str(restriction) if restriction else None


_SNOWFLAKE_TOKEN = re.compile(r'^snowflake\s+token\s*=\s*(?:"([^"]*)"|(\S+))$', re.IGNORECASE)
_BEARER = re.compile(r"^bearer\s+(\S+)$", re.IGNORECASE)


def parse_authorization(header_value: str) -> str | None:
    """The secret in an Authorization header (``Snowflake Token="<secret>"`` or ``Bearer <secret>``),
    None when the header has neither form."""
    if not header_value:
        return None
    text = header_value.strip()
    match = _SNOWFLAKE_TOKEN.match(text)
    if match:
        secret = match.group(1) if match.group(1) is not None else match.group(2)
        return secret or None
    match = _BEARER.match(text)
    if match:
        return match.group(1)
    return None
