from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from duckserve.engine import access as A
from duckserve.engine import tokens as T
from duckserve.engine.account import Account, Session
from duckserve.engine.catalog import now
from duckserve.errors import InsufficientPrivileges, ObjectExists, ObjectNotFound, ProgrammingError


@pytest.fixture
def account(home: Path) -> Account:
    return Account(home)


@pytest.fixture
def admin(account: Account) -> Session:
    return account.open_session()


@pytest.fixture
def alice(account: Account, admin: Session) -> Session:
    """User ALICE with role ANALYST as her default role, created by ACCOUNTADMIN."""
    account.create_role(admin, "ANALYST")
    account.create_role(admin, "OTHER")
    account.create_user(admin, "ALICE", settings={"DEFAULT_ROLE": "ANALYST"})
    account.grant_role(admin, "ANALYST", A.USER, "ALICE")
    return account.open_session("ALICE")


def secret_of(rows: T.Rows) -> str:
    assert rows.columns == ["token_name", "token_secret"]
    return str(rows.rows[0][1])


def shown(account: Account, session: Session, user: str | None = None) -> list[dict[str, object]]:
    result = T.show_tokens(account, session, user)
    return [dict(zip(result.columns, row)) for row in result.rows]


def test_add_authenticate_show_remove(account: Account, alice: Session) -> None:
    added = T.add_token(account, alice, "ALICE", "CI", comment="for CI")
    assert added.rows[0][0] == "CI"
    secret = secret_of(added)
    assert secret.startswith(T.SECRET_PREFIX) and len(secret) > 40
    assert T.authenticate(account, secret) == ("ALICE", "ANALYST")

    listing = shown(account, alice)
    assert [r["name"] for r in listing] == ["CI"]
    row = listing[0]
    assert row["user_name"] == "ALICE" and row["status"] == "ACTIVE" and row["comment"] == "for CI"
    assert row["role_restriction"] is None
    expires = row["expires_at"]
    assert isinstance(expires, type(now()))
    assert timedelta(days=14, hours=23) < expires - now() <= timedelta(days=15)
    assert secret not in repr(T.show_tokens(account, alice, None).rows)

    assert T.remove_token(account, alice, "ALICE", "CI").columns == ["status"]
    assert shown(account, alice) == []
    with pytest.raises(T.TokenError, match="not valid"):
        T.authenticate(account, secret)


def test_secret_shown_once_and_never_stored_in_clear(account: Account, alice: Session, home: Path) -> None:
    secret = secret_of(T.add_token(account, alice, "ALICE", "T1"))
    other = secret_of(T.add_token(account, alice, "ALICE", "T2"))
    assert secret != other
    account.catalog.close()
    stored = b"".join(p.read_bytes() for p in home.iterdir() if p.name.startswith("catalog.sqlite"))
    assert secret.encode() not in stored and other.encode() not in stored
    assert secret[len(T.SECRET_PREFIX):].encode() not in stored
    again = Account(home)
    assert T.authenticate(again, secret) == ("ALICE", "ANALYST")


def test_duplicate_name_says_remove_first(account: Account, alice: Session) -> None:
    T.add_token(account, alice, "ALICE", "CI")
    with pytest.raises(ObjectExists, match="REMOVE PROGRAMMATIC ACCESS TOKEN CI first"):
        T.add_token(account, alice, "ALICE", "CI")


def test_remove_unknown_token_names_it(account: Account, alice: Session) -> None:
    T.add_token(account, alice, "ALICE", "NIGHTLY")
    with pytest.raises(ObjectNotFound, match="NIGHTLI .*did you mean NIGHTLY"):
        T.remove_token(account, alice, "ALICE", "NIGHTLI")


def test_expiry(account: Account, alice: Session) -> None:
    secret = secret_of(T.add_token(account, alice, "ALICE", "SHORT", days_to_expiry=1))
    token = account.catalog.get(T.TOKEN_KIND, "ALICE/SHORT")
    assert token is not None
    assert timedelta(hours=23) < T._expires_at(token) - now() <= timedelta(days=1)
    token.props["expires_at"] = (now() - timedelta(seconds=1)).isoformat()
    account.catalog.update(token)
    with pytest.raises(T.TokenError, match="SHORT of user ALICE expired.*ADD PROGRAMMATIC ACCESS TOKEN"):
        T.authenticate(account, secret)
    assert shown(account, alice)[0]["status"] == "EXPIRED"


@pytest.mark.parametrize("days", [0, -1, 366, 1.5, True])
def test_days_to_expiry_bounds(account: Account, alice: Session, days: object) -> None:
    with pytest.raises(ProgrammingError, match="DAYS_TO_EXPIRY must be a whole number from 1 to 365"):
        T.add_token(account, alice, "ALICE", "X", days_to_expiry=days)  # type: ignore[arg-type]


def test_max_expiry_accepted(account: Account, alice: Session) -> None:
    T.add_token(account, alice, "ALICE", "LONG", days_to_expiry=365)
    assert shown(account, alice)[0]["expires_at"] > now() + timedelta(days=364)  # type: ignore[operator]


def test_role_restriction(account: Account, admin: Session, alice: Session) -> None:
    with pytest.raises(ProgrammingError, match="GRANT ROLE OTHER TO USER ALICE"):
        T.add_token(account, alice, "ALICE", "R", role_restriction="OTHER")
    with pytest.raises(ObjectNotFound, match="role NOPE does not exist"):
        T.add_token(account, alice, "ALICE", "R", role_restriction="nope")
    account.grant_role(admin, "OTHER", A.USER, "ALICE")
    secret = secret_of(T.add_token(account, alice, "ALICE", "R", role_restriction="other"))
    assert shown(account, alice)[0]["role_restriction"] == "OTHER"
    assert T.authenticate(account, secret) == ("ALICE", "OTHER")
    # revoking the role makes the token unusable, with the fix in the message
    account.grant_role(admin, "OTHER", A.USER, "ALICE", revoke=True)
    with pytest.raises(T.TokenError, match="restricted to role OTHER.*GRANT ROLE OTHER TO USER ALICE"):
        T.authenticate(account, secret)


def test_role_without_restriction_falls_back(account: Account, admin: Session) -> None:
    account.create_user(admin, "BOB")
    secret = secret_of(T.add_token(account, admin, "BOB", "T"))
    assert T.authenticate(account, secret) == ("BOB", A.PUBLIC)
    # a default role the user was never granted is not used
    account.alter_user(admin, "BOB", {"DEFAULT_ROLE": "SYSADMIN"})
    assert T.authenticate(account, secret) == ("BOB", A.PUBLIC)
    account.grant_role(admin, "SYSADMIN", A.USER, "BOB")
    assert T.authenticate(account, secret) == ("BOB", "SYSADMIN")


def test_disabled_and_dropped_users(account: Account, admin: Session, alice: Session) -> None:
    secret = secret_of(T.add_token(account, alice, "ALICE", "T"))
    account.alter_user(admin, "ALICE", {"DISABLED": True})
    with pytest.raises(T.TokenError, match="ALICE is disabled.*SET DISABLED = FALSE"):
        T.authenticate(account, secret)
    account.alter_user(admin, "ALICE", {"DISABLED": False})
    assert T.authenticate(account, secret)[0] == "ALICE"
    account.drop_user(admin, "ALICE")
    account.create_user(admin, "ALICE")
    with pytest.raises(T.TokenError, match="not valid"):  # DROP USER deleted its tokens
        T.authenticate(account, secret)
    # the new ALICE does not inherit the old one's tokens, and may reuse their names
    assert shown(account, admin, "ALICE") == []
    fresh = secret_of(T.add_token(account, admin, "ALICE", "T"))
    assert T.authenticate(account, fresh) == ("ALICE", A.PUBLIC)
    with pytest.raises(T.TokenError):
        T.authenticate(account, secret)


def test_privileges(account: Account, admin: Session, alice: Session) -> None:
    account.create_user(admin, "CAROL")
    account.grant_role(admin, "OTHER", A.USER, "CAROL")
    carol = account.open_session("CAROL", role="OTHER")
    T.add_token(account, alice, "ALICE", "MINE")
    for attempt in (
        lambda: T.add_token(account, carol, "ALICE", "X"),
        lambda: T.remove_token(account, carol, "ALICE", "MINE"),
        lambda: T.show_tokens(account, carol, "ALICE"),
    ):
        with pytest.raises(InsufficientPrivileges, match="OWNERSHIP on user ALICE.*connect as user ALICE"):
            attempt()
    # ACCOUNTADMIN manages anyone's tokens; SHOW without a user means the session's user
    assert [r["name"] for r in shown(account, admin, "ALICE")] == ["MINE"]
    assert shown(account, carol) == []
    # the role owning a user manages its tokens too
    account.grant(admin, ["OWNERSHIP"], A.USER, "ALICE", "OTHER")
    T.add_token(account, carol, "ALICE", "FROM_OWNER")
    T.remove_token(account, carol, "ALICE", "MINE")
    assert [r["name"] for r in shown(account, alice)] == ["FROM_OWNER"]


def test_unknown_user(account: Account, admin: Session) -> None:
    with pytest.raises(ObjectNotFound, match="user NOBODY does not exist"):
        T.add_token(account, admin, "NOBODY", "T")


@pytest.mark.parametrize("secret", ["", "dspat_nope", "x" * 200])
def test_unknown_secret(account: Account, secret: str) -> None:
    with pytest.raises(T.TokenError, match="ADD PROGRAMMATIC ACCESS TOKEN"):
        T.authenticate(account, secret)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Snowflake Token="abc.def-123"', "abc.def-123"),
        ('snowflake token = "abc"', "abc"),
        ("Snowflake Token=abc", "abc"),
        ("Bearer abc_1", "abc_1"),
        ("bearer   abc", "abc"),
        ("  Bearer abc  ", "abc"),
        ('Snowflake Token=""', None),
        ("Bearer", None),
        ("Basic dXNlcjpwYXNz", None),
        ("", None),
        ("abc", None),
    ],
)
def test_parse_authorization(header: str, expected: str | None) -> None:
    assert T.parse_authorization(header) == expected
