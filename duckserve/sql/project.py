"""``duckserve run PROJECT_DIR``: a dbt-style project of seeds and SQL models, run in dependency order.

The layout and the Jinja follow dbt's conventions so a dbt user feels at home:

- ``dbt_project.yml``: ``name``, ``vars``, ``models:``/``seeds:`` config trees (``+materialized``,
  ``+schema``, ``+tags``, ... per folder), ``on-run-start``/``on-run-end`` hooks, ``model-paths``,
  ``seed-paths``, ``macro-paths``; ``profiles.yml`` beside it may name the database (``path``) and
  the account (``home``, ``user``, ``role``, ``warehouse``).
- ``models/**/*.sql``: one SELECT each, with ``ref``, ``source``, ``config(materialized='view' |
  'table' | 'incremental', unique_key=..., schema=..., on_schema_change=...)``, ``var``, ``this``,
  ``is_incremental()``, ``env_var``, ``target`` and the project's macros.
- ``models/**/*.yml``: ``sources:`` (and per-model ``config:``); ``seeds/**/*.csv``: loaded as tables.
- duckserve's own addition, ``setup/``: ``.sql`` files (control-plane statements such as CREATE
  COMPUTE POOL) and ``.py`` files defining ``setup(conn)`` (log and deploy a model), run in name
  order before the seeds and models, so a model can call ``service!method(...)``.

A model's compiled SQL keeps the source's line numbers (multi-line Jinja tags are folded onto
their first line and the lost newlines put back after them), so a database error is reported at
the file and line the user wrote. Compiled SQL goes to ``target/compiled``, the statements run to
``target/run``, and the outcome of each node to ``target/run_results.json``, as dbt does.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import fnmatch
import heapq
import inspect
import json
import os
import re
import runpy
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from duckserve.errors import Error, ProgrammingError

if TYPE_CHECKING:
    from duckserve.sql.connection import Connection, Result

PROJECT_FILE = "dbt_project.yml"
PROFILES_FILE = "profiles.yml"
MATERIALIZATIONS = ("view", "table", "incremental")
ON_SCHEMA_CHANGE = ("ignore", "fail", "append_new_columns", "sync_all_columns")
#: config names that may be written without dbt's ``+`` prefix in the dbt_project.yml trees
KNOWN_CONFIGS = {"materialized", "schema", "alias", "tags", "enabled", "unique_key", "incremental_strategy",
                 "on_schema_change", "pre_hook", "post_hook", "pre-hook", "post-hook", "column_types", "delimiter",
                 "full_refresh", "meta", "docs", "persist_docs", "database", "quote_columns", "grants",
                 "contract", "group", "access"}
_ADDITIVE = {"tags", "pre_hook", "post_hook"}
_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_DUCKDB_LINE = re.compile(r"\bLINE (\d+):")


class ProjectError(ProgrammingError):
    """The project is malformed: bad YAML, an unknown ref or source, a cycle, a Jinja error.
    The message names the file (and line) and what to change."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


# -- the project on disk -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Relation:
    """A table or view in the database, rendered as ``"schema"."name"`` (dbt's ``this``, ``ref``)."""

    schema: str
    identifier: str

    @property
    def name(self) -> str:
        return self.identifier

    def __str__(self) -> str:
        return f"{quote(self.schema)}.{quote(self.identifier)}"

    def render(self) -> str:
        return str(self)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Source:
    source_name: str
    table_name: str
    schema: str
    identifier: str
    defined_in: str

    @property
    def relation(self) -> Relation:
        return Relation(self.schema, self.identifier)


@dataclass
class Node:
    """A seed or a model."""

    kind: str  # "seed" or "model"
    name: str
    path: Path
    rel_path: str  # relative to the project root, for messages
    fqn: list[str]  # project name, folders, node name: what the config trees and path selectors match
    raw: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    refs: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)

    @property
    def materialized(self) -> str:
        return "seed" if self.kind == "seed" else str(self.config.get("materialized", "view"))

    @property
    def relation(self) -> Relation:
        return Relation(str(self.config.get("schema") or "main"), str(self.config.get("alias") or self.name))

    @property
    def tags(self) -> list[str]:
        tags = self.config.get("tags") or []
        return [tags] if isinstance(tags, str) else list(tags)


def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ProjectError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except OSError as exc:
        raise ProjectError(f"cannot read {path}: {exc.strerror}") from None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _normalize_config(config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        key = key.lstrip("+").replace("-", "_") if key.lstrip("+") in ("pre-hook", "post-hook") else key.lstrip("+")
        out[key] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in _normalize_config(extra).items():
        if key in _ADDITIVE:
            merged[key] = _as_list(merged.get(key)) + [v for v in _as_list(value) if v not in _as_list(merged.get(key))]
        else:
            merged[key] = value
    return merged


def tree_config(tree: Any, fqn: Sequence[str]) -> dict[str, Any]:
    """The config a dbt_project.yml ``models:``/``seeds:`` tree gives the node at ``fqn``: keys with
    ``+`` (or known config names) apply at their level and below; other keys are folders."""
    config: dict[str, Any] = {}
    level = tree if isinstance(tree, dict) else {}
    for depth in range(len(fqn) + 1):
        config = _merge(config, {k: v for k, v in level.items() if k.startswith("+") or k in KNOWN_CONFIGS})
        if depth == len(fqn):
            break
        nxt = level.get(fqn[depth])
        if not isinstance(nxt, dict):
            break
        level = nxt
    return config


@dataclass
class Profile:
    database: str | None = None
    home: str | None = None
    user: str | None = None
    role: str | None = None
    warehouse: str | None = None
    schema: str | None = None
    target: str = "dev"


class Project:
    """A project read from disk: its nodes, sources and macros, validated and ordered."""

    def __init__(self, root: str | os.PathLike[str], cli_vars: dict[str, Any] | None = None,
                 target: str | None = None) -> None:
        self.root = Path(root).resolve()
        project_file = self.root / PROJECT_FILE
        if not project_file.is_file():
            raise ProjectError(f"{self.root} has no {PROJECT_FILE}: a project needs one, with at least "
                               "`name: my_project` (see examples/jaffle_shop)")
        data = _load_yaml(project_file) or {}
        if not isinstance(data, dict) or not data.get("name"):
            raise ProjectError(f"{project_file}: give the project a name (`name: my_project`)")
        self.data = data
        self.name = str(data["name"])
        self.vars: dict[str, Any] = dict(data.get("vars") or {})
        self.vars.update(cli_vars or {})
        self.model_paths = [str(p) for p in _as_list(data.get("model-paths") or data.get("source-paths") or ["models"])]
        self.seed_paths = [str(p) for p in _as_list(data.get("seed-paths") or data.get("data-paths") or ["seeds"])]
        self.macro_paths = [str(p) for p in _as_list(data.get("macro-paths") or ["macros"])]
        self.setup_paths = [str(p) for p in _as_list(data.get("setup-paths") or ["setup"])]
        self.target_path = self.root / str(data.get("target-path") or "target")
        self.on_run_start = [str(s) for s in _as_list(data.get("on-run-start"))]
        self.on_run_end = [str(s) for s in _as_list(data.get("on-run-end"))]
        self.profile = self._profile(target)
        self.sources: dict[tuple[str, str], Source] = {}
        self.properties: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, name) -> yml properties
        self.nodes: dict[str, Node] = {}
        self.setup_files = self._files(self.setup_paths, ("*.sql", "*.py"))
        self.macros = "".join(fold_jinja(p.read_text(encoding="utf-8")) + "\n"
                              for p in self._files(self.macro_paths, ("*.sql",)))
        self._read_properties()
        self._read_seeds()
        self._read_models()
        self._resolve()
        self.order = self._topological_order()

    # -- reading --------------------------------------------------------------------------------
    def _files(self, folders: Iterable[str], patterns: Sequence[str]) -> list[Path]:
        found: list[Path] = []
        for folder in folders:
            base = self.root / folder
            if base.is_dir():
                found += [p for pattern in patterns for p in base.rglob(pattern) if p.is_file()]
        return sorted(set(found), key=lambda p: p.relative_to(self.root).as_posix())

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _profile(self, target: str | None) -> Profile:
        path = self.root / PROFILES_FILE
        if not path.is_file():
            return Profile(target=target or "dev")
        data = _load_yaml(path) or {}
        name = str(self.data.get("profile") or self.name)
        profile = data.get(name) if isinstance(data, dict) else None
        if not isinstance(profile, dict):
            raise ProjectError(f"{path} has no profile {name!r} (the project's `profile:`, else its name); "
                               f"it has {', '.join(map(str, data)) if isinstance(data, dict) else 'none'}")
        chosen = target or str(profile.get("target") or "dev")
        outputs = profile.get("outputs") or {}
        output = outputs.get(chosen)
        if not isinstance(output, dict):
            raise ProjectError(f"{path}: profile {name!r} has no output {chosen!r}; it has {', '.join(outputs)}")
        kind = str(output.get("type", "duckserve"))
        if kind not in ("duckserve", "duckdb"):
            raise ProjectError(f"{path}: output {chosen!r} is type {kind!r}; duckserve runs type duckserve "
                               "(or duckdb) outputs")
        database = output.get("path") or output.get("database")
        if database and database != ":memory:" and not os.path.isabs(os.path.expanduser(str(database))):
            database = str(self.root / str(database))
        return Profile(database=str(database) if database else None, home=output.get("home"),
                       user=output.get("user"), role=output.get("role"), warehouse=output.get("warehouse"),
                       schema=output.get("schema"), target=chosen)

    def _read_properties(self) -> None:
        for path in self._files(self.model_paths + self.seed_paths, ("*.yml", "*.yaml")):
            data = _load_yaml(path) or {}
            if not isinstance(data, dict):
                continue
            where = self.rel(path)
            for source in _as_list(data.get("sources")):
                if not isinstance(source, dict) or "name" not in source:
                    raise ProjectError(f"{where}: each entry under sources: needs a name")
                schema = str(source.get("schema") or source["name"])
                for table in _as_list(source.get("tables")):
                    if not isinstance(table, dict) or "name" not in table:
                        raise ProjectError(f"{where}: each table of source {source['name']} needs a name")
                    key = (str(source["name"]), str(table["name"]))
                    self.sources[key] = Source(key[0], key[1], schema, str(table.get("identifier") or table["name"]),
                                               where)
            for kind in ("models", "seeds"):
                for entry in _as_list(data.get(kind)):
                    if isinstance(entry, dict) and "name" in entry:
                        self.properties[(kind[:-1], str(entry["name"]))] = {**entry, "_file": where}

    def _add(self, node: Node) -> None:
        other = self.nodes.get(node.name)
        if other is not None:
            raise ProjectError(f"two nodes are named {node.name}: {other.rel_path} and {node.rel_path}; "
                               "rename one (names are file names without the extension)")
        self.nodes[node.name] = node

    def _read_seeds(self) -> None:
        for folder in self.seed_paths:
            for path in self._files([folder], ("*.csv",)):
                parts = path.relative_to(self.root / folder).with_suffix("").parts
                node = Node("seed", path.stem, path, self.rel(path), [self.name, *parts])
                node.config = tree_config(self.data.get("seeds"), node.fqn)
                props = self.properties.get(("seed", node.name), {})
                node.config = _merge(node.config, props.get("config") or {})
                self._add(node)

    def _read_models(self) -> None:
        for folder in self.model_paths:
            for path in self._files([folder], ("*.sql",)):
                parts = path.relative_to(self.root / folder).with_suffix("").parts
                node = Node("model", path.stem, path, self.rel(path), [self.name, *parts],
                            raw=path.read_text(encoding="utf-8"))
                node.config = tree_config(self.data.get("models"), node.fqn)
                props = self.properties.get(("model", node.name), {})
                node.config = _merge(node.config, props.get("config") or {})
                if self.profile.schema and "schema" not in node.config:
                    node.config["schema"] = self.profile.schema
                self._add(node)
        for node in [n for n in self.nodes.values() if n.kind == "model"]:
            self._parse(node)
        for name in [n.name for n in self.nodes.values() if n.config.get("enabled") is False]:
            del self.nodes[name]
        for node in self.nodes.values():
            if node.kind == "model" and node.materialized not in MATERIALIZATIONS:
                raise ProjectError(f"{node.rel_path}: materialized={node.materialized!r} is not supported; use "
                                   f"{', '.join(MATERIALIZATIONS)}")
            if node.config.get("on_schema_change", "ignore") not in ON_SCHEMA_CHANGE:
                raise ProjectError(f"{node.rel_path}: on_schema_change={node.config['on_schema_change']!r}; use "
                                   f"{', '.join(ON_SCHEMA_CHANGE)}")

    def _parse(self, node: Node) -> None:
        """Render once to learn the model's refs, sources and config() (dbt's parse phase)."""
        context = Context(self, node, recording=True)
        render(self, node, context)
        node.refs, node.sources = context.refs, context.source_calls
        node.config = _merge(node.config, context.config_calls)

    def _resolve(self) -> None:
        for node in self.nodes.values():
            parents = []
            for ref in node.refs:
                if ref not in self.nodes:
                    close = difflib.get_close_matches(ref, list(self.nodes), n=1)
                    hint = f"; did you mean {close[0]!r} ({self.nodes[close[0]].rel_path})?" if close else ""
                    raise ProjectError(f"{node.rel_path} refers to ref({ref!r}), which is no model or seed of "
                                       f"the project{hint}")
                if ref not in parents:
                    parents.append(ref)
            seeds = {(n.relation.schema.lower(), n.relation.identifier.lower()): n.name
                     for n in self.nodes.values() if n.kind == "seed"}
            for source in node.sources:
                if source not in self.sources:
                    known = ", ".join(f"{s}.{t}" for s, t in self.sources) or "none are declared"
                    raise ProjectError(f"{node.rel_path} refers to source{source!r}, which no sources: entry in "
                                       f"a .yml under {', '.join(self.model_paths)} declares (declared: {known})")
                # a source that a seed loads depends on that seed, so +model reloads it first
                relation = self.sources[source].relation
                seed = seeds.get((relation.schema.lower(), relation.identifier.lower()))
                if seed is not None and seed not in parents:
                    parents.append(seed)
            node.parents = parents

    def _topological_order(self) -> list[str]:
        children: dict[str, list[str]] = {name: [] for name in self.nodes}
        waiting = {name: len(node.parents) for name, node in self.nodes.items()}
        for name, node in self.nodes.items():
            for parent in node.parents:
                children[parent].append(name)
        ready = [(0 if self.nodes[n].kind == "seed" else 1, n) for n, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(name)
            for child in children[name]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, (1, child))
        if len(order) < len(self.nodes):
            raise ProjectError("dependency cycle: " + " -> ".join(self._cycle(set(self.nodes) - set(order))))
        return order

    def _cycle(self, stuck: set[str]) -> list[str]:
        start = min(stuck)
        path, seen = [start], {start}
        current = start
        while True:
            current = next(p for p in sorted(self.nodes[current].parents) if p in stuck)
            if current in seen:
                loop = path[path.index(current):] + [current]
                return [self.nodes[n].rel_path for n in reversed(loop)]
            path.append(current)
            seen.add(current)

    # -- selection ------------------------------------------------------------------------------
    def select(self, include: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
        """The nodes to run, in order: dbt's selector syntax (name, +name, name+, n+name, tag:x,
        path:dir, config.materialized:x, globs; spaces unite, commas intersect)."""
        chosen = set(self.nodes) if not include else set().union(*(self._selector(s) for s in include))
        for selector in exclude:
            chosen -= self._selector(selector)
        return [n for n in self.order if n in chosen]

    def _selector(self, text: str) -> set[str]:
        result: set[str] | None = None
        for part in text.split(","):
            found = self._one_selector(part.strip())
            result = found if result is None else result & found
        return result or set()

    def _one_selector(self, text: str) -> set[str]:
        match = re.fullmatch(r"(\d*\+)?(.+?)(\+\d*)?", text)
        assert match is not None
        up, body, down = match.groups()
        found = self._match(body)
        if not found:
            names = ", ".join(n for n in self.order)
            raise ProjectError(f"--select {text!r} matches no model or seed; the project has: {names}")
        result = set(found)
        if up:
            result |= self._walk(found, lambda n: self.nodes[n].parents, _depth(up))
        if down:
            children: dict[str, list[str]] = {n: [] for n in self.nodes}
            for name, node in self.nodes.items():
                for parent in node.parents:
                    children[parent].append(name)
            result |= self._walk(found, lambda n: children[n], _depth(down))
        return result

    def _match(self, body: str) -> set[str]:
        method, _, value = body.partition(":") if ":" in body else ("", "", body)
        nodes = self.nodes.values()
        if method == "tag":
            return {n.name for n in nodes if value in n.tags}
        if method == "path":
            target = value.rstrip("/")
            return {n.name for n in nodes if n.rel_path == target or n.rel_path.startswith(target + "/")
                    or fnmatch.fnmatch(n.rel_path, target)}
        if method.startswith("config."):
            key = method[len("config."):]
            return {n.name for n in nodes if str(n.config.get(key, n.materialized if key == "materialized" else ""))
                    == value}
        if method == "resource_type":
            return {n.name for n in nodes if n.kind == value}
        if method:
            raise ProjectError(f"unknown selector method {method!r}: use tag:, path:, config.<name>:, resource_type:")
        if "/" in value or value.endswith((".sql", ".csv")):
            return self._match("path:" + value)
        return {n.name for n in nodes if fnmatch.fnmatch(n.name, value) or _fqn_match(n.fqn, value.split("."))}

    @staticmethod
    def _walk(start: Iterable[str], step: Callable[[str], Iterable[str]], depth: int | None) -> set[str]:
        seen: set[str] = set()
        frontier = set(start)
        level = 0
        while frontier and (depth is None or level < depth):
            nxt = {m for n in frontier for m in step(n)} - seen
            seen |= nxt
            frontier = nxt
            level += 1
        return seen


def _depth(operator: str) -> int | None:
    digits = operator.strip("+")
    return int(digits) if digits else None


def _fqn_match(fqn: Sequence[str], parts: Sequence[str]) -> bool:
    """``marts`` or ``marts.customers`` selects by folder, as dbt's fqn selection does."""
    body = list(fqn[1:])
    for i in range(len(body) - len(parts) + 1):
        if [p.lower() for p in body[i:i + len(parts)]] == [p.lower() for p in parts]:
            return True
    return False


# -- Jinja ---------------------------------------------------------------------------------------------
def fold_jinja(text: str) -> str:
    """Fold each multi-line Jinja tag onto its first line and put its newlines back after it, so
    rendered SQL keeps the source's line numbers."""
    def fold(match: re.Match[str]) -> str:
        tag = match.group()
        lines = tag.count("\n")
        return tag.replace("\n", " ") + "\n" * lines if lines else tag

    return _JINJA_TAG.sub(fold, text)


class _Namespace:
    def __init__(self, **items: Any) -> None:
        self.__dict__.update(items)


class Context:
    """What a model's Jinja sees. ``recording`` is dbt's parse phase: refs and config() are noted."""

    def __init__(self, project: Project, node: Node | None, *, recording: bool = False,
                 incremental: bool = False, target_name: str = "dev", database: str | None = None) -> None:
        self.project = project
        self.node = node
        self.recording = recording
        self.incremental = incremental
        self.refs: list[str] = []
        self.source_calls: list[tuple[str, str]] = []
        self.config_calls: dict[str, Any] = {}
        self.target = _Namespace(name=project.profile.target, schema=project.profile.schema or "main",
                                 type="duckserve", path=database, profile_name=project.name, threads=1)

    def where(self) -> str:
        return self.node.rel_path if self.node is not None else "a hook"

    def ref(self, *names: str, **_kwargs: Any) -> Relation:
        if not names or len(names) > 2:
            raise ProjectError(f"{self.where()}: ref() takes a model name (or a package and a name)")
        name = names[-1]
        self.refs.append(name)
        node = self.project.nodes.get(name)
        if node is None:
            if self.recording:
                return Relation("main", name)
            raise ProjectError(f"{self.where()} refers to ref({name!r}), which is no model or seed of the project")
        return node.relation

    def source(self, source_name: str, table_name: str) -> Relation:
        key = (source_name, table_name)
        self.source_calls.append(key)
        found = self.project.sources.get(key)
        if found is None:
            if self.recording:
                return Relation(source_name, table_name)
            raise ProjectError(f"{self.where()} refers to source({source_name!r}, {table_name!r}), which is not "
                               "declared under sources: in a .yml file")
        return found.relation

    def config(self, *args: Any, **kwargs: Any) -> str:
        if args and isinstance(args[0], dict):
            kwargs = {**args[0], **kwargs}
        self.config_calls.update(kwargs)
        return ""

    def var(self, name: str, default: Any = ...) -> Any:
        if name in self.project.vars:
            return self.project.vars[name]
        if default is not ...:
            return default
        raise ProjectError(f"{self.where()}: var({name!r}) is not defined: add it under vars: in "
                           f"{PROJECT_FILE} or pass --vars '{{{name}: ...}}'")

    def env_var(self, name: str, default: Any = ...) -> Any:
        if name in os.environ:
            return os.environ[name]
        if default is not ...:
            return default
        raise ProjectError(f"{self.where()}: env_var({name!r}) is not set and has no default")

    def is_incremental(self) -> bool:
        return self.incremental

    def log(self, message: Any, info: bool = False) -> str:
        if info and not self.recording:
            print(message)
        return ""

    def raise_compiler_error(self, message: str) -> None:
        raise ProjectError(f"{self.where()}: {message}")

    def variables(self) -> dict[str, Any]:
        node = self.node
        this = node.relation if node is not None else None
        return {
            "ref": self.ref, "source": self.source, "config": self.config, "var": self.var,
            "env_var": self.env_var, "is_incremental": self.is_incremental, "this": this, "target": self.target,
            "log": self.log, "project_name": self.project.name, "model": node,
            "run_started_at": datetime.datetime.now(datetime.timezone.utc),
            "modules": _Namespace(datetime=datetime, re=re, json=json),
            "exceptions": _Namespace(raise_compiler_error=self.raise_compiler_error),
            "adapter": _Namespace(quote=quote),
        }


def render_text(project: Project, text: str, filename: str, context: Context) -> str:
    """Render ``text`` with the project's macros; errors name the file and the line."""
    import jinja2

    sources = {filename: fold_jinja(text), "<macros>": project.macros}
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (sources[name], name, lambda: True)),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])
    variables = context.variables()
    try:
        if project.macros:
            module = env.get_template("<macros>").make_module(variables)
            variables.update({name: getattr(module, name) for name in dir(module) if not name.startswith("_")})
        return str(env.get_template(filename).render(variables))
    except jinja2.TemplateSyntaxError as exc:
        where = filename if exc.filename != "<macros>" else "a macro in " + ", ".join(project.macro_paths)
        raise ProjectError(f"{where}, line {exc.lineno}: Jinja syntax error: {exc.message}", filename,
                           exc.lineno) from None
    except ProjectError as exc:
        line = _template_line(exc, filename)
        message = str(exc)
        if message.startswith(filename) and line and not message.startswith(f"{filename}, line"):
            message = f"{filename}, line {line}" + message[len(filename):]
        raise ProjectError(message, filename, line) from None
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, filename)
        raise ProjectError(f"{filename}{f', line {line}' if line else ''}: {exc.message} (is it a var() or a "
                           "macro you meant?)", filename, line) from None
    except Exception as exc:  # an error in an expression of the template: name the file and line anyway
        line = _template_line(exc, filename)
        raise ProjectError(f"{filename}{f', line {line}' if line else ''}: {type(exc).__name__}: {exc}",
                           filename, line) from None


def _template_line(exc: BaseException, filename: str) -> int | None:
    """The template line an exception passed through (Jinja rewrites tracebacks to template lines)."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    return line


def render(project: Project, node: Node, context: Context) -> str:
    return render_text(project, node.raw, node.rel_path, context)


# -- running -------------------------------------------------------------------------------------------
@dataclass
class NodeResult:
    name: str
    kind: str
    materialized: str
    relation: str
    status: str  # success, error, skipped
    message: str  # "CREATE VIEW", "INSERT 42", or the error
    rows: int | None
    seconds: float
    file: str
    line: int | None = None
    compiled_path: str | None = None


class Runner:
    """Runs a project against a connection: setup, seeds and models, reporting as it goes."""

    def __init__(self, project: Project, connection: Connection, *, full_refresh: bool = False,
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.project = project
        self.connection = connection
        self.full_refresh = full_refresh
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.results: list[NodeResult] = []

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # -- helpers ----------------------------------------------------------------------------------
    def execute(self, sql: str) -> Result:
        """One statement through the connection (so service calls and our statements work)."""
        from duckserve.sql import splitter

        statements = splitter.split(sql)
        if len(statements) != 1:
            raise ProjectError(f"expected one statement, got {len(statements)}")
        return self.connection.run_statement(statements[0])

    def scalar(self, sql: str, *parameters: Any) -> Any:
        rows = self.connection.duckdb.execute(sql, list(parameters)).fetchall()
        return rows[0][0] if rows else None

    def relation_type(self, relation: Relation) -> str | None:
        """"BASE TABLE", "VIEW" or None when the relation does not exist."""
        return self.scalar("SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND "
                           "table_name = ? AND table_catalog = current_database()",
                           relation.schema, relation.identifier)

    def columns(self, relation: Relation) -> list[str]:
        rows = self.connection.duckdb.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "AND table_catalog = current_database() ORDER BY ordinal_position",
            [relation.schema, relation.identifier]).fetchall()
        return [r[0] for r in rows]

    def ensure_schema(self, schema: str) -> None:
        if schema.lower() != "main":
            self.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")

    def write_target(self, kind: str, node: Node, text: str) -> Path:
        path = self.project.target_path / kind / self.project.name / node.rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    # -- the run ----------------------------------------------------------------------------------
    def run(self, selected: Sequence[str], *, setup: bool = True, seeds: bool = True) -> bool:
        project = self.project
        started = time.perf_counter()
        names = [n for n in selected if seeds or project.nodes[n].kind != "seed"]
        counts = {kind: sum(1 for n in names if project.nodes[n].kind == kind) for kind in ("seed", "model")}
        setups = len(project.setup_files) + (1 if project.on_run_start else 0) if setup else 0
        self.say(f"Running project {project.name}: {counts['seed']} seed(s), {counts['model']} model(s)"
                 + (f", {setups} setup step(s)" if setups else "") + f" into {self.connection.database}")
        ok = True
        if setup:
            ok = self.run_setup()
        total = len(names)
        for index, name in enumerate(names, start=1):
            node = project.nodes[name]
            if not ok:
                self.results.append(NodeResult(name, node.kind, node.materialized, str(node.relation), "skipped",
                                               "SKIP", None, 0.0, node.rel_path))
                continue
            width = len(str(total))
            label = "seed" if node.kind == "seed" else f"{node.materialized} model"
            shown = f"{label:<17} {node.relation.schema}.{node.relation.identifier} "
            shown += "." * max(3, 64 - len(shown))
            self.say(f"{index:>{width}} of {total} START {shown} [RUN]")
            result = self.run_node(node)
            self.results.append(result)
            if result.status == "success":
                self.say(f"{index:>{width}} of {total} OK    {shown} [{result.message} in {result.seconds:.2f}s]")
            else:
                ok = False
                self.say(f"{index:>{width}} of {total} ERROR {shown} [ERROR in {result.seconds:.2f}s]")
                self.report_failure(result)
        if ok and setup and project.on_run_end:
            ok = self.run_hooks(project.on_run_end, "on-run-end")
        self.write_run_results(time.perf_counter() - started)
        passed = sum(r.status == "success" for r in self.results)
        failed = sum(r.status == "error" for r in self.results)
        skipped = sum(r.status == "skipped" for r in self.results)
        self.say(f"Finished in {time.perf_counter() - started:.2f}s: PASS={passed} ERROR={failed} SKIP={skipped} "
                 f"TOTAL={len(self.results)}")
        return ok

    def report_failure(self, result: NodeResult) -> None:
        where = result.file + (f", line {result.line}" if result.line else "")
        lines = [f"Failure in {result.kind} {result.name} ({where}):"]
        lines += ["  " + line for line in result.message.splitlines()]
        if result.compiled_path:
            lines.append(f"  compiled SQL: {result.compiled_path}")
        self.err.write("\n".join(lines) + "\n")
        self.err.flush()

    def run_setup(self) -> bool:
        project = self.project
        if project.on_run_start and not self.run_hooks(project.on_run_start, "on-run-start"):
            return False
        for path in project.setup_files:
            started = time.perf_counter()
            rel = project.rel(path)
            try:
                detail = self.run_python_setup(path) if path.suffix == ".py" else self.run_sql_file(path)
            except _StepFailed as failed:
                self.say(f"  ERROR setup {rel} [ERROR in {time.perf_counter() - started:.2f}s]")
                self.results.append(NodeResult(rel, "setup", "setup", "", "error", failed.message, None,
                                               time.perf_counter() - started, rel, failed.line))
                self.report_failure(self.results[-1])
                return False
            self.say(f"  OK    setup {rel} [{detail} in {time.perf_counter() - started:.2f}s]")
        return True

    def run_hooks(self, hooks: Sequence[str], label: str) -> bool:
        for hook in hooks:
            try:
                self.run_script(render_text(self.project, hook, f"{PROJECT_FILE} {label}",
                                            Context(self.project, None)), f"{PROJECT_FILE} {label}")
            except (_StepFailed, ProjectError) as exc:
                message = exc.message if isinstance(exc, _StepFailed) else str(exc)
                self.results.append(NodeResult(label, "hook", "hook", "", "error", message, None, 0.0, PROJECT_FILE))
                self.report_failure(self.results[-1])
                return False
        self.say(f"  OK    {label} hooks ({len(hooks)})")
        return True

    def run_sql_file(self, path: Path) -> str:
        rel = self.project.rel(path)
        try:
            text = render_text(self.project, path.read_text(encoding="utf-8"), rel, Context(self.project, None))
        except ProjectError as exc:
            raise _StepFailed(str(exc), None) from None
        count = self.run_script(text, rel)
        return f"{count} statement{'s' if count != 1 else ''}"

    def run_script(self, text: str, rel: str) -> int:
        from duckserve.sql import splitter

        try:
            statements = splitter.split(text)
        except Error as exc:
            raise _StepFailed(f"{rel}: {exc}", None) from None
        for statement in statements:
            try:
                self.connection.run_statement(statement)
            except Error as exc:
                line = statement.position(statement.tokens[0])[0]
                within = _error_line(exc, statement.text, None)
                raise _StepFailed(str(exc), line + within - 1 if within else line) from None
        return len(statements)

    def run_python_setup(self, path: Path) -> str:
        rel = self.project.rel(path)
        sys.path.insert(0, str(path.parent))
        try:
            namespace = runpy.run_path(str(path), run_name=f"duckserve_setup_{path.stem}")
            function = namespace.get("setup")
            if not callable(function):
                raise _StepFailed(f"{rel} defines no setup(conn) function: a Python setup file is called as "
                                  "setup(conn) (or setup(conn, vars)) with the run's connection", None)
            arity = len(inspect.signature(function).parameters)
            outcome = function(self.connection, dict(self.project.vars)) if arity >= 2 else function(self.connection)
        except _StepFailed:
            raise
        except Exception as exc:  # the user's Python: report where it failed in their file
            line = next((ln for frame, ln in reversed(list(traceback.walk_tb(exc.__traceback__)))
                         if frame.f_code.co_filename == str(path)), None)
            raise _StepFailed(f"{type(exc).__name__}: {exc}", line) from exc
        finally:
            sys.path.remove(str(path.parent))
        return str(outcome) if isinstance(outcome, str) and outcome else "done"

    def run_node(self, node: Node) -> NodeResult:
        started = time.perf_counter()
        compiled_path: Path | None = None
        rows: int | None
        lines_match = True
        try:
            if node.kind == "seed":
                message, rows = self.load_seed(node)
            else:
                exists = self.relation_type(node.relation)
                incremental = (node.materialized == "incremental" and exists == "BASE TABLE"
                               and not self.full_refresh and node.config.get("full_refresh") is not True)
                context = Context(self.project, node, incremental=incremental, database=self.connection.database)
                rendered = render(self.project, node, context)
                # loops and multi-line macros add lines: then an error line is the compiled file's
                lines_match = rendered.count("\n") == node.raw.count("\n")
                sql = strip_statement(rendered, node)
                compiled_path = self.write_target("compiled", node, sql)
                for hook in _as_list(node.config.get("pre_hook")):
                    label = f"{node.rel_path} (pre_hook)"
                    self.run_script(render_text(self.project, str(hook), label, context), label)
                message, rows = self.materialize(node, sql, exists, incremental)
                for hook in _as_list(node.config.get("post_hook")):
                    label = f"{node.rel_path} (post_hook)"
                    self.run_script(render_text(self.project, str(hook), label, context), label)
        except ProjectError as exc:
            message = str(exc)
            prefix = f"{node.rel_path}, line {exc.line}: " if exc.line else f"{node.rel_path}: "
            message = message[len(prefix):] if message.startswith(prefix) else message
            return NodeResult(node.name, node.kind, node.materialized, str(node.relation), "error", message, None,
                              time.perf_counter() - started, node.rel_path, exc.line,
                              self.project.rel(compiled_path) if compiled_path else None)
        except _StepFailed as exc:
            line, message = exc.line, exc.message
            if line and not lines_match:
                message += f"\n(at line {line} of the compiled SQL: its Jinja adds lines)"
                line = None
            return NodeResult(node.name, node.kind, node.materialized, str(node.relation), "error", message, None,
                              time.perf_counter() - started, node.rel_path, line,
                              self.project.rel(compiled_path) if compiled_path else None)
        return NodeResult(node.name, node.kind, node.materialized, str(node.relation), "success", message, rows,
                          time.perf_counter() - started, node.rel_path, None,
                          self.project.rel(compiled_path) if compiled_path else None)

    def load_seed(self, node: Node) -> tuple[str, int]:
        relation = node.relation
        options = ["header = true", "auto_detect = true"]
        types = node.config.get("column_types") or {}
        if types:
            if not isinstance(types, dict):
                raise ProjectError(f"{node.rel_path}: column_types is a mapping of column name to type")
            options.append("types = {" + ", ".join(f"{sql_string(str(k))}: {sql_string(str(v))}"
                                                  for k, v in types.items()) + "}")
        if node.config.get("delimiter"):
            options.append(f"delim = {sql_string(str(node.config['delimiter']))}")
        try:
            self.ensure_schema(relation.schema)
            if self.relation_type(relation) == "VIEW":
                self.execute(f"DROP VIEW {relation}")
            self.execute(f"CREATE OR REPLACE TABLE {relation} AS SELECT * FROM "
                         f"read_csv({sql_string(str(node.path))}, {', '.join(options)})")
        except Error as exc:
            raise _StepFailed(str(exc), None) from None
        rows = int(self.scalar(f"SELECT count(*) FROM {relation}"))
        return f"INSERT {rows}", rows

    def materialize(self, node: Node, sql: str, exists: str | None, incremental: bool) -> tuple[str, int | None]:
        relation = node.relation
        kind = node.materialized
        if kind == "view":
            _refuse_service_calls_in_view(node, sql)
        try:
            self.ensure_schema(relation.schema)
        except Error as exc:
            raise _StepFailed(str(exc), None) from None
        if kind == "incremental" and incremental:
            return self.merge_increment(node, sql)
        wanted = "VIEW" if kind == "view" else "BASE TABLE"
        if exists is not None and exists != wanted:
            self.execute(f"DROP {'VIEW' if exists == 'VIEW' else 'TABLE'} {relation}")
        statement = (f"CREATE OR REPLACE VIEW {relation} AS " if kind == "view"
                     else f"CREATE OR REPLACE TABLE {relation} AS ") + sql
        self.run_model_sql(node, statement)
        if kind == "view":
            return "CREATE VIEW", None
        rows = int(self.scalar(f"SELECT count(*) FROM {relation}"))
        return f"SELECT {rows}", rows

    def run_model_sql(self, node: Node, statement: str) -> Result:
        self.write_target("run", node, statement + ";\n")
        try:
            return self.execute(statement)
        except Error as exc:
            raise _StepFailed(str(exc), _error_line(exc, statement, node)) from None

    def merge_increment(self, node: Node, sql: str) -> tuple[str, int]:
        relation = node.relation
        staging_sql = quote(f"__duckserve_increment_{node.name}")  # a temp table shadows main's names
        self.run_model_sql(node, f"CREATE OR REPLACE TEMP TABLE {staging_sql} AS " + sql)
        try:
            new_columns = [r[0] for r in self.connection.duckdb.execute(
                f"SELECT column_name FROM (DESCRIBE {staging_sql})").fetchall()]
            old_columns = self.columns(relation)
            added = [c for c in new_columns if c.lower() not in {o.lower() for o in old_columns}]
            removed = [c for c in old_columns if c.lower() not in {n.lower() for n in new_columns}]
            policy = node.config.get("on_schema_change", "ignore")
            if (added or removed) and policy == "fail":
                raise _StepFailed(f"the columns of {relation} changed (new: {', '.join(added) or 'none'}; gone: "
                                  f"{', '.join(removed) or 'none'}) and on_schema_change='fail': rebuild with "
                                  "--full-refresh or set on_schema_change='append_new_columns'", None)
            self.execute("BEGIN TRANSACTION")
            try:
                if policy in ("append_new_columns", "sync_all_columns"):
                    for column in added:
                        kind = self.scalar(f"SELECT column_type FROM (DESCRIBE {staging_sql}) WHERE column_name = ?",
                                           column)
                        self.execute(f"ALTER TABLE {relation} ADD COLUMN {quote(column)} {kind}")
                if policy == "sync_all_columns":
                    for column in removed:
                        self.execute(f"ALTER TABLE {relation} DROP COLUMN {quote(column)}")
                target_columns = self.columns(relation)
                shared = [c for c in target_columns if c.lower() in {n.lower() for n in new_columns}]
                deleted = 0
                keys = _as_list(node.config.get("unique_key"))
                strategy = node.config.get("incremental_strategy") or ("delete+insert" if keys else "append")
                if strategy not in ("append", "delete+insert", "merge"):
                    raise _StepFailed(f"incremental_strategy={strategy!r} is not supported; use append or "
                                      "delete+insert (merge is delete+insert here)", None)
                if keys and strategy != "append":
                    condition = " AND ".join(f"{relation}.{quote(str(k))} = {staging_sql}.{quote(str(k))}"
                                             for k in keys)
                    deleted = self.execute(f"DELETE FROM {relation} USING {staging_sql} WHERE {condition}").rowcount
                columns = ", ".join(quote(c) for c in shared)
                inserted = self.execute(f"INSERT INTO {relation} ({columns}) SELECT {columns} FROM {staging_sql}"
                                        ).rowcount
                self.execute("COMMIT")
            except BaseException:
                self.connection.rollback()
                raise
        except Error as exc:
            raise _StepFailed(str(exc), None) from None
        finally:
            self.connection.duckdb.execute(f"DROP TABLE IF EXISTS {staging_sql}")
        message = f"INSERT {inserted}" + (f", DELETE {deleted}" if deleted else "")
        return message, inserted

    def write_run_results(self, elapsed: float) -> None:
        path = self.project.target_path / "run_results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "metadata": {"generated_by": "duckserve run", "generated_at": datetime.datetime.now(
                datetime.timezone.utc).isoformat(), "project": self.project.name},
            "elapsed_time": elapsed,
            "results": [{"unique_id": f"{r.kind}.{self.project.name}.{r.name}", "status": r.status,
                         "materialized": r.materialized, "relation": r.relation, "message": r.message,
                         "rows_affected": r.rows, "execution_time": r.seconds, "file": r.file, "line": r.line,
                         "compiled_path": r.compiled_path} for r in self.results],
        }
        path.write_text(json.dumps(payload, indent=2), encoding="utf-8")


class _StepFailed(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def strip_statement(sql: str, node: Node) -> str:
    """The model's single SELECT, without a trailing ``;``; more than one statement is an error."""
    from duckserve.sql import splitter

    try:
        statements = splitter.split(sql)
    except Error as exc:
        raise ProjectError(f"{node.rel_path}: {exc}") from None
    if not statements:
        raise ProjectError(f"{node.rel_path} renders to no SQL: a model is one SELECT statement")
    if len(statements) > 1:
        line = statements[1].position(statements[1].tokens[0])[0]
        raise ProjectError(f"{node.rel_path}, line {line}: a model is one SELECT statement and this one has "
                           f"{len(statements)}; move setup statements to setup/ or a pre_hook", node.rel_path, line)
    last = statements[0]
    return sql[:last.offset + len(last.text)] + sql[last.offset + len(last.text):].replace(";", "", 1).rstrip() + "\n"


def _refuse_service_calls_in_view(node: Node, sql: str) -> None:
    from duckserve.sql import splitter
    from duckserve.sql.service_functions import find_calls

    statement = splitter.split(sql)[0]
    calls = find_calls(statement)
    if calls:
        call = calls[0]
        line = splitter.line_col(sql, call.start)[0]
        raise _StepFailed(f"{node.name} is a view but calls {sql[call.start:statement.tokens[call.paren].start]}: a "
                          "service call cannot live in a view (it is bound to the query that runs it); "
                          "materialize the model as a table: {{ config(materialized='table') }}", line)


def _error_line(exc: Error, statement: str, node: Node | None) -> int | None:
    """The line of the statement a database error points at (DuckDB's ``LINE n``, our syntax
    errors' line, or the service call a service error names)."""
    line = getattr(exc, "line", 0) or None
    match = _DUCKDB_LINE.search(str(exc))
    if match:
        line = int(match.group(1))
    if line is None:
        from duckserve.errors import ObjectNotFound, ServiceError
        from duckserve.sql import splitter
        from duckserve.sql.service_functions import find_calls

        if isinstance(exc, (ServiceError, ObjectNotFound)) or "!" in str(exc):
            try:
                calls = find_calls(splitter.split(statement)[0])
            except Error:
                calls = []
            message = str(exc).upper()
            for call in calls:
                if call.name.name.upper() in message or call.method.upper() in message:
                    return splitter.line_col(statement, call.start)[0]
    return line


# -- the command -------------------------------------------------------------------------------------------
def parse_vars(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProjectError(f"--vars is not YAML or JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProjectError("--vars takes a mapping, e.g. --vars '{start_date: 2024-01-01}'")
    return value


def run_project(project_dir: str | os.PathLike[str], *, database: str | None = None, home: str | None = None,
                user: str | None = None, role: str | None = None, warehouse: str | None = None,
                select: Sequence[str] = (), exclude: Sequence[str] = (), full_refresh: bool = False,
                cli_vars: dict[str, Any] | None = None, target: str | None = None, setup: bool = True,
                seeds: bool = True, out: TextIO | None = None, err: TextIO | None = None) -> bool:
    """Run a project end to end; True when every selected node succeeded."""
    import duckserve

    project = Project(project_dir, cli_vars, target)
    selected = project.select(select, exclude)
    profile = project.profile
    database = database or profile.database or str(project.root / f"{project.name}.duckdb")
    connection = duckserve.connect(database, home=home or profile.home, user=user or profile.user,
                                   role=role or profile.role, warehouse=warehouse or profile.warehouse)
    with connection:
        return Runner(project, connection, full_refresh=full_refresh, out=out, err=err).run(
            selected, setup=setup, seeds=seeds)


def run_project_command(args: argparse.Namespace) -> int:
    try:
        ok = run_project(args.project_dir, database=args.database, home=args.home, user=args.user, role=args.role,
                         warehouse=args.warehouse, select=args.select, exclude=args.exclude,
                         full_refresh=args.full_refresh, cli_vars=parse_vars(args.vars), target=args.target,
                         setup=not args.no_setup, seeds=not args.no_seeds)
    except ProjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1
