"""Object kinds and the privileges that can be granted on each, as Snowflake names them."""

from __future__ import annotations

from dataclasses import dataclass

from duckserve.engine.names import display

ACCOUNT = "ACCOUNT"
COMPUTE_POOL = "COMPUTE POOL"
IMAGE_REPOSITORY = "IMAGE REPOSITORY"
WAREHOUSE = "WAREHOUSE"
ROLE = "ROLE"
USER = "USER"
MODEL = "MODEL"
SERVICE = "SERVICE"
SERVICE_ROLE = "SERVICE ROLE"
IMAGE = "IMAGE"

ACCOUNTADMIN = "ACCOUNTADMIN"
SYSADMIN = "SYSADMIN"
PUBLIC = "PUBLIC"
ADMIN_USER = "ADMIN"

OWNERSHIP = "OWNERSHIP"

#: what can be granted on each kind (OWNERSHIP transfers the object; ALL expands to the rest)
PRIVILEGES: dict[str, tuple[str, ...]] = {
    ACCOUNT: (
        "BIND SERVICE ENDPOINT", "CREATE COMPUTE POOL", "CREATE WAREHOUSE", "CREATE ROLE", "CREATE USER",
        "CREATE IMAGE REPOSITORY", "CREATE MODEL", "MANAGE GRANTS",
    ),
    COMPUTE_POOL: ("USAGE", "OPERATE", "MONITOR", "MODIFY", OWNERSHIP),
    IMAGE_REPOSITORY: ("READ", "WRITE", "SERVICE READ", "SERVICE WRITE", OWNERSHIP),
    WAREHOUSE: ("USAGE", "OPERATE", "MONITOR", "MODIFY", OWNERSHIP),
    MODEL: ("USAGE", OWNERSHIP),
    SERVICE: ("USAGE", "MONITOR", "OPERATE", OWNERSHIP),
    ROLE: (OWNERSHIP,),
    USER: (OWNERSHIP,),
}

#: service roles every model service defines (granted with GRANT SERVICE ROLE svc!NAME TO ROLE r)
SERVICE_ROLES = ("ALL_ENDPOINTS_USAGE", "INFERENCE_SERVICE_FUNCTION_USAGE")

#: privileges that are verbs of two words, so the parser can read them
MULTIWORD_PRIVILEGES = sorted({p for ps in PRIVILEGES.values() for p in ps if " " in p}, key=len, reverse=True)

#: kinds that live in a database.schema
SCHEMA_KINDS = (IMAGE_REPOSITORY, MODEL, SERVICE)


def grantable(kind: str) -> tuple[str, ...]:
    return PRIVILEGES.get(kind, ())


def all_privileges(kind: str) -> tuple[str, ...]:
    return tuple(p for p in PRIVILEGES.get(kind, ()) if p != OWNERSHIP)


def kind_label(kind: str) -> str:
    """Lower-case kind for messages ('compute pool')."""
    return kind.lower()


@dataclass(frozen=True)
class Denied:
    """What a role lacked, rendered as an error message with the GRANT that fixes it."""

    role: str
    privileges: tuple[str, ...]
    kind: str
    name: str
    owner: str | None = None

    def message(self, action: str) -> str:
        wanted = " or ".join(self.privileges)
        target = "the account" if self.kind == ACCOUNT else f"{kind_label(self.kind)} {self.name}"
        on = "ACCOUNT" if self.kind == ACCOUNT else f"{self.kind} {self.name}"
        first = next((p for p in self.privileges if p != OWNERSHIP), self.privileges[0])
        if first == OWNERSHIP:
            fix = f"GRANT OWNERSHIP ON {on} TO ROLE {display(self.role)}"
        else:
            fix = f"GRANT {first} ON {on} TO ROLE {display(self.role)}"
        by = f" (as {self.owner} or ACCOUNTADMIN)" if self.owner and self.owner != ACCOUNTADMIN else " (as ACCOUNTADMIN)"
        return f"role {self.role} cannot {action}: it lacks {wanted} on {target}; run {fix}{by}"
