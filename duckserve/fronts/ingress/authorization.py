"""Who a request's token is, and whether it may call the service: decided from the catalog, and
reused only while the catalog has not changed since.

Every request asks the catalog one cheap question (`Catalog.changes`, SQLite's data version): when
nothing was committed since a decision was made, the decision stands (and the token has not
expired meanwhile); after any commit (a GRANT, a REVOKE, a removed token, a dropped service) the next
request decides again. So a grant takes effect on the very next request, and so does a revoke.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from duckserve.engine import access as A
from duckserve.engine.account import Account, display_key
from duckserve.engine.catalog import CatalogObject, now
from duckserve.engine.names import ObjectName, display
from duckserve.engine.tokens import TokenError, authenticate_until, how_to_get_a_token, parse_authorization

ENDPOINT_ROLE = "ALL_ENDPOINTS_USAGE"
_MAX_REMEMBERED = 10_000


class Refusal(Exception):
    """An answer of the ingress itself: status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Caller:
    user: str
    role: str


@dataclass(frozen=True)
class Decision:
    caller: Caller | None
    service: CatalogObject | None
    allowed: bool
    expires: datetime | None
    refusal: TokenError | None = None


class Authorizer:
    """The service's record and the decisions for tokens, valid for one catalog version."""

    def __init__(self, account: Account, service: ObjectName, alias: ObjectName | None = None) -> None:
        self.account = account
        self.service_name = service
        self.alias = alias
        self._version: tuple[int, int] | None = None
        self._service: CatalogObject | None = None
        self._decisions: dict[str, Decision] = {}

    @property
    def label(self) -> str:
        return self.service_name.qualified

    def fresh(self) -> bool:
        """True while nothing was committed to the catalog since the remembered answers were read
        (cheap: call it on every request)."""
        return self._version is not None and self.account.catalog.changes() == self._version

    def refresh(self) -> None:
        """Forget every remembered answer and read the service again (may wait for SQLite)."""
        version = self.account.catalog.changes()
        name = self.service_name
        found = self.account.catalog.get(A.SERVICE, name.name, name.database, name.schema)
        if found is None and self.alias is not None and self.alias != name:
            found = self.account.catalog.get(A.SERVICE, self.alias.name, self.alias.database, self.alias.schema)
        self._decisions = {}
        self._service = found
        self._version = version

    def service(self) -> CatalogObject | None:
        return self._service

    def remembered(self, secret: str) -> Decision | None:
        """The decision for ``secret`` if it is still valid (call `fresh` first)."""
        decision = self._decisions.get(_digest(secret))
        if decision is None or (decision.expires is not None and decision.expires <= now()):
            return None
        return decision

    def decide(self, secret: str) -> Decision:
        """Decide for ``secret`` against the catalog as `refresh` last read it (may wait for SQLite)."""
        service = self._service
        try:
            user, role, expires = authenticate_until(self.account, secret)
        except TokenError as exc:
            decision = Decision(None, service, False, None, exc)
        else:
            allowed = False
            if service is not None:
                roles = self.account.effective_roles(role)
                allowed = (A.ACCOUNTADMIN in roles or service.owner in roles
                           or self.account.role_has_service_role(roles, service, ENDPOINT_ROLE))
            decision = Decision(Caller(user, role), service, allowed, expires)
        if len(self._decisions) >= _MAX_REMEMBERED:
            self._decisions.clear()
        self._decisions[_digest(secret)] = decision
        return decision

    def check(self, decision: Decision) -> Caller:
        """The caller, or the Refusal (401, 403, 404) that answers the request."""
        challenge = {"WWW-Authenticate": 'Bearer realm="duckserve"'}
        if decision.refusal is not None or decision.caller is None:
            raise Refusal(401, f"service {self.label}: {decision.refusal}", challenge)
        if decision.service is None:
            raise Refusal(404, f"service {self.label} does not exist (it was dropped or never created)")
        if not decision.allowed:
            svc = display_key(decision.service)
            role = display(decision.caller.role)
            raise Refusal(
                403,
                f"role {role} of user {display(decision.caller.user)} may not call the endpoint of service {svc}: "
                f"run GRANT SERVICE ROLE {svc}!{ENDPOINT_ROLE} TO ROLE {role} "
                f"(as the service's owner {display(decision.service.owner)} or ACCOUNTADMIN)",
            )
        return decision.caller


def secret_of(header: str | None, label: str) -> str:
    """The token in an Authorization header, or the 401 Refusal saying how to send one."""
    secret = parse_authorization(header) if header else None
    if secret is None:
        problem = "no Authorization header" if header is None else "the Authorization header has no token"
        raise Refusal(401, f"service {label}: {problem}; {how_to_get_a_token()}",
                      {"WWW-Authenticate": 'Bearer realm="duckserve"'})
    return secret


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()
