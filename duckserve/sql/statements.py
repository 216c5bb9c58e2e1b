"""Typed forms of duckserve's own statements (everything else is DuckDB SQL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from duckserve.engine.names import ObjectName


@dataclass
class Statement:
    #: the statement's text as the user wrote it
    sql: str = field(default="", repr=False, compare=False, kw_only=True)


@dataclass
class Create(Statement):
    kind: str
    name: ObjectName
    properties: dict[str, Any]
    or_replace: bool = False
    if_not_exists: bool = False


@dataclass
class Alter(Statement):
    kind: str
    name: ObjectName
    action: str  # SUSPEND, RESUME, STOP ALL, SET, UNSET, ADD TOKEN, REMOVE TOKEN, ...
    properties: dict[str, Any] = field(default_factory=dict)
    if_exists: bool = False


@dataclass
class Drop(Statement):
    kind: str
    name: ObjectName
    if_exists: bool = False


@dataclass
class Show(Statement):
    what: str  # COMPUTE POOLS, IMAGE REPOSITORIES, IMAGES, WAREHOUSES, ROLES, USERS, GRANTS, ...
    like: str | None = None
    in_kind: str | None = None
    in_name: ObjectName | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Describe(Statement):
    kind: str
    name: ObjectName


@dataclass
class Use(Statement):
    kind: str  # ROLE, WAREHOUSE, DATABASE, SCHEMA, SECONDARY ROLES
    name: ObjectName


@dataclass
class GrantPrivileges(Statement):
    privileges: list[str]
    on_kind: str
    on_name: ObjectName | None
    role: str
    revoke: bool = False


@dataclass
class GrantRole(Statement):
    role: str
    to_kind: str  # USER or ROLE
    to_name: str
    revoke: bool = False


@dataclass
class GrantServiceRole(Statement):
    service: ObjectName
    service_role: str
    role: str
    revoke: bool = False


@dataclass
class Call(Statement):
    function: str
    arguments: list[Any]


@dataclass
class CreateModel(Statement):
    """``CREATE MODEL m WITH VERSION v FROM 'path'`` and ``ALTER MODEL m ADD VERSION v FROM 'path'``:
    a model directory (an MLflow model) registered as a version."""

    name: ObjectName
    version: str | None
    source: str
    or_replace: bool = False
    if_not_exists: bool = False
    comment: str | None = None
    add_version: bool = False
