"""Who is signed in to the console, and the duckserve connection each sign-in runs SQL through.

Two ways in, the same two the account has for programs: a programmatic access token (checked by
``duckserve.engine.tokens``, again while the session lives, so a removed token ends it), or, from
this machine only, the local trust a SQL connection has: whoever can use the account's home is
trusted. A browser proves that with the key in the link ``duckserve ui`` prints (it is known only
to whoever started the console), and may then sign in as any user, as ``connect(user=...)`` may.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from duckserve import errors
from duckserve.engine import access as A
from duckserve.engine.account import Account
from duckserve.engine.names import display, parse_simple_name
from duckserve.engine.tokens import TokenError, authenticate, how_to_get_a_token, role_restriction
from duckserve.fronts.console.actions import Operations
from duckserve.fronts.console.worksheet import Worksheet

#: a session unused this long is signed out
IDLE_SECONDS = 12 * 3600
#: how often a token session's token is checked again
RECHECK_SECONDS = 1.0
TOKEN = "PROGRAMMATIC_ACCESS_TOKEN"
LOCAL = "LOCAL_TRUST"


class SignInRefused(errors.OperationalError):
    """A sign-in's credential does not authenticate (an unknown, expired or removed token; local
    trust asked for from another machine or without the console's key). Answered with 401."""


@dataclass(frozen=True)
class Identity:
    user: str
    role: str | None            # the role to start in (None: the user's default role)
    restriction: str | None     # the token's ROLE_RESTRICTION: the only role the session may use
    method: str                 # TOKEN or LOCAL
    secret: str | None = None


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def by_token(account: Account, secret: str) -> Identity:
    secret = (secret or "").strip()
    if not secret:
        raise SignInRefused(f"enter a programmatic access token: {how_to_get_a_token()}")
    try:
        user, role = authenticate(account, secret)
    except TokenError as exc:
        raise SignInRefused(str(exc)) from exc
    return Identity(user, role, role_restriction(account, secret), TOKEN, secret)


def by_local_trust(account: Account, expected_key: str, key: str, client_host: str | None,
                   user: str | None, role: str | None) -> Identity:
    if not is_loopback(client_host):
        raise SignInRefused("local sign-in is only for this machine: sign in with a programmatic access token "
                            f"({how_to_get_a_token()})")
    if not key or not hmac.compare_digest(key.encode(), expected_key.encode()):
        raise SignInRefused("local sign-in needs the console's key: open the link that `duckserve ui` printed "
                            "(it ends in ?key=...), or sign in with a programmatic access token")
    user_name = parse_simple_name(user, "user") if user and user.strip() else A.ADMIN_USER
    return Identity(user_name, parse_simple_name(role, "role") if role and role.strip() else None, None, LOCAL)


@dataclass
class ConsoleSession:
    """One signed-in browser: its identity and its connections (pages on one, actions and the
    worksheet each on their own, so a long query or a resume never holds the pages up)."""

    console: Console
    identity: Identity
    connection: Any
    session_id: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    used: float = field(default_factory=time.monotonic)
    checked: float = field(default_factory=time.monotonic)
    operations: Operations = field(default_factory=Operations)
    _connections: dict[str, Any] = field(default_factory=dict)
    _worksheet: Worksheet | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def role(self) -> str:
        return str(self.connection.session.role)

    def check(self) -> None:
        """The credential still authenticates (a removed or expired token ends the session)."""
        self.used = time.monotonic()
        if self.identity.secret is None or self.used - self.checked < RECHECK_SECONDS:
            return
        try:
            authenticate(self.console.account, self.identity.secret)
        except TokenError as exc:
            raise SignInRefused(f"signed out: {exc}") from exc
        self.checked = self.used

    def side_connection(self, purpose: str) -> Any:
        """A connection of its own for ``purpose`` ("actions", "worksheet"), in the pages' role."""
        with self.lock:
            connection = self._connections.get(purpose)
            if connection is None:
                connection = self._connections[purpose] = self.console.connect(self.identity, self.role)
            return connection

    def worksheet(self) -> Worksheet:
        connection = self.side_connection("worksheet")
        with self.lock:
            if self._worksheet is None:
                self._worksheet = Worksheet(connection)
            return self._worksheet

    def use_role(self, role: str) -> None:
        """USE ROLE on every connection of the session (the pages' first: it is the one refused)."""
        name = display(parse_simple_name(role, "role"))
        self.connection.run(f"USE ROLE {name}")
        with self.lock:
            others = list(self._connections.values())
        for connection in others:
            connection.run(f"USE ROLE {name}")

    def close(self) -> None:
        with self.lock:
            connections = [self.connection, *self._connections.values()]
            self._connections.clear()
        for connection in connections:
            try:
                connection.functions.cancel()
                connection.close()
            except errors.Error:
                pass


class Console:
    """The console's account, database, local key and signed-in sessions."""

    def __init__(self, home: str | None, database: str = ":memory:", local_user: str | None = None) -> None:
        self.account = Account(home)
        self.home = str(self.account.home)
        self.local_key = secrets.token_urlsafe(24)
        self.local_user = local_user
        # every session of an in-memory console sees one database: a named in-memory one
        self.database = f":memory:duckserve_console_{uuid.uuid4().hex}" if database == ":memory:" else database
        self._keeper = None
        if self.database.startswith(":memory:"):
            import duckdb

            self._keeper = duckdb.connect(self.database)   # keeps the shared database alive between sessions
        self._sessions: dict[str, ConsoleSession] = {}
        self._lock = threading.Lock()

    def connect(self, identity: Identity, role: str | None) -> Any:
        import duckserve

        connection = duckserve.connect(self.database, home=self.home, user=identity.user, role=role)
        connection.session.role_restriction = identity.restriction
        return connection

    def sign_in(self, identity: Identity) -> ConsoleSession:
        connection = self.connect(identity, identity.restriction or identity.role)
        session = ConsoleSession(self, identity, connection)
        with self._lock:
            self._forget_idle()
            self._sessions[session.session_id] = session
        return session

    def session(self, session_id: str | None) -> ConsoleSession | None:
        if not session_id:
            return None
        with self._lock:
            return self._sessions.get(session_id)

    def sign_out(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()

    def _forget_idle(self) -> None:
        limit = time.monotonic() - IDLE_SECONDS
        for key in [k for k, s in self._sessions.items() if s.used < limit]:
            self._sessions.pop(key).close()

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()
        if self._keeper is not None:
            self._keeper.close()
        self.account.catalog.close()
