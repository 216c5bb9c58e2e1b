"""Parsers for duckserve's own statements, over sqlglot tokens.

``parse(statement)`` returns a typed statement when the statement is one of ours and ``None``
when it is DuckDB SQL. Each statement family has one small parse function, registered in
``STATEMENT_PARSERS`` by its leading word, as sqlglot's own dialects do. Syntax errors point at
the line and column of the script and say what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlglot.tokens import Token, TokenType

from duckserve.engine import access as A
from duckserve.engine.names import ObjectName, normalize
from duckserve.errors import SQLSyntaxError
from duckserve.sql import statements as S
from duckserve.sql.splitter import Statement as Source

_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_LITERAL_TYPES = {TokenType.STRING, TokenType.IDENTIFIER, TokenType.NUMBER, TokenType.HEREDOC_STRING,
                  TokenType.RAW_STRING, TokenType.NATIONAL_STRING, TokenType.BYTE_STRING}

#: object kinds by the words that name them (longest first), and the plural SHOW forms
KIND_WORDS: list[tuple[tuple[str, ...], str]] = [
    (("COMPUTE", "POOL"), A.COMPUTE_POOL),
    (("IMAGE", "REPOSITORY"), A.IMAGE_REPOSITORY),
    (("WAREHOUSE",), A.WAREHOUSE),
    (("ROLE",), A.ROLE),
    (("USER",), A.USER),
    (("SERVICE",), A.SERVICE),
    (("MODEL",), A.MODEL),
]
CREATE_KINDS = (A.COMPUTE_POOL, A.IMAGE_REPOSITORY, A.WAREHOUSE, A.ROLE, A.USER)
ALTER_KINDS = (A.COMPUTE_POOL, A.WAREHOUSE, A.USER, A.SERVICE, A.MODEL)
DROP_KINDS = (A.COMPUTE_POOL, A.IMAGE_REPOSITORY, A.WAREHOUSE, A.ROLE, A.USER, A.SERVICE, A.MODEL)
DESCRIBE_KINDS = (A.COMPUTE_POOL, A.WAREHOUSE, A.USER, A.IMAGE_REPOSITORY, A.SERVICE, A.MODEL)
SHOW_WHATS = [
    ("COMPUTE", "POOLS"), ("IMAGE", "REPOSITORIES"), ("IMAGES",), ("WAREHOUSES",), ("ROLES",), ("USERS",),
    ("GRANTS",), ("SERVICES",), ("SERVICE", "CONTAINERS"), ("SERVICE", "INSTANCES"), ("ENDPOINTS",),
    ("MODELS",), ("VERSIONS",), ("FUNCTIONS",), ("USER", "PROGRAMMATIC", "ACCESS", "TOKENS"),
]
#: SHOW forms whose object follows IN <kind> name
SHOW_IN = {"SERVICE CONTAINERS": A.SERVICE, "SERVICE INSTANCES": A.SERVICE, "ENDPOINTS": A.SERVICE,
           "VERSIONS": A.MODEL, "FUNCTIONS": A.MODEL}

#: properties each CREATE accepts (name -> kind of value)
CREATE_PROPERTIES: dict[str, dict[str, str]] = {
    A.COMPUTE_POOL: {"MIN_NODES": "int", "MAX_NODES": "int", "INSTANCE_FAMILY": "word", "AUTO_RESUME": "bool",
                     "AUTO_SUSPEND_SECS": "int", "INITIALLY_SUSPENDED": "bool", "COMMENT": "str",
                     "RUNTIME": "word"},  # RUNTIME: duckserve's extension, 'PROCESS' or 'DOCKER'
    A.IMAGE_REPOSITORY: {"COMMENT": "str"},
    A.WAREHOUSE: {"WAREHOUSE_SIZE": "word", "WAREHOUSE_TYPE": "word", "AUTO_SUSPEND": "int", "AUTO_RESUME": "bool",
                  "INITIALLY_SUSPENDED": "bool", "MIN_CLUSTER_COUNT": "int", "MAX_CLUSTER_COUNT": "int",
                  "SCALING_POLICY": "word", "COMMENT": "str"},
    A.ROLE: {"COMMENT": "str"},
    A.USER: {"PASSWORD": "str", "LOGIN_NAME": "word", "DISPLAY_NAME": "word", "FIRST_NAME": "word",
             "LAST_NAME": "word", "EMAIL": "word", "DEFAULT_ROLE": "word", "DEFAULT_WAREHOUSE": "word",
             "DEFAULT_NAMESPACE": "word", "RSA_PUBLIC_KEY": "str", "RSA_PUBLIC_KEY_2": "str", "DISABLED": "bool",
             "MUST_CHANGE_PASSWORD": "bool", "TYPE": "word", "COMMENT": "str"},
}
ALTER_SET_PROPERTIES: dict[str, dict[str, str]] = {
    A.COMPUTE_POOL: {k: v for k, v in CREATE_PROPERTIES[A.COMPUTE_POOL].items() if k != "INITIALLY_SUSPENDED"},
    A.WAREHOUSE: {k: v for k, v in CREATE_PROPERTIES[A.WAREHOUSE].items() if k != "INITIALLY_SUSPENDED"},
    A.USER: CREATE_PROPERTIES[A.USER],
    A.SERVICE: {"MIN_INSTANCES": "int", "MAX_INSTANCES": "int", "AUTO_RESUME": "bool", "AUTO_SUSPEND_SECS": "int",
                "COMMENT": "str", "MODEL_VERSION": "word", "TARGET_CONCURRENCY": "int"},
    A.MODEL: {"DEFAULT_VERSION": "word", "COMMENT": "str"},
}
PAT_PROPERTIES = {"ROLE_RESTRICTION": "word", "DAYS_TO_EXPIRY": "int", "MINS_TO_BYPASS_NETWORK_POLICY_REQUIREMENT": "int",
                  "COMMENT": "str"}


class Stream:
    """A cursor over one statement's tokens with the helpers the parse functions need."""

    def __init__(self, source: Source, duckdb_sees: Callable[[str], bool] | None = None) -> None:
        self.source = source
        self.tokens = source.tokens
        self.i = 0
        #: whether DuckDB would read a bare name as one of its tables or views (or a Python variable)
        self.duckdb_sees = duckdb_sees or (lambda name: False)

    # -- looking --------------------------------------------------------------------------------
    def peek(self, k: int = 0) -> Token | None:
        j = self.i + k
        return self.tokens[j] if j < len(self.tokens) else None

    def word(self, k: int = 0) -> str:
        token = self.peek(k)
        if token is None or token.token_type in _LITERAL_TYPES or not _WORD.match(token.text):
            return ""
        return token.text.upper()

    def at(self, *words: str) -> bool:
        return all(self.word(k) == w for k, w in enumerate(words))

    def at_end(self) -> bool:
        return self.i >= len(self.tokens)

    # -- consuming ------------------------------------------------------------------------------
    def accept(self, *words: str) -> bool:
        if self.at(*words):
            self.i += len(words)
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            self.fail(" ".join(words))

    def accept_type(self, token_type: TokenType) -> Token | None:
        token = self.peek()
        if token is not None and token.token_type == token_type:
            self.i += 1
            return token
        return None

    def expect_type(self, token_type: TokenType, what: str) -> Token:
        token = self.accept_type(token_type)
        if token is None:
            self.fail(what)
        assert token is not None
        return token

    def fail(self, expected: str) -> None:
        token = self.peek()
        line, col = self.source.position(token)
        near = f"near '{token.text}'" if token is not None else "at the end of the statement"
        raise SQLSyntaxError(f"syntax error at line {line}, column {col} {near}: expected {expected}", line, col)

    def end(self) -> None:
        if not self.at_end():
            self.fail("the end of the statement")

    # -- pieces ---------------------------------------------------------------------------------
    def identifier(self, what: str = "a name") -> str:
        token = self.peek()
        if token is not None and token.token_type == TokenType.IDENTIFIER:
            self.i += 1
            return normalize(token.text, quoted=True)
        if self.word():
            self.i += 1
            return normalize(token.text) if token is not None else ""
        self.fail(what)
        return ""

    def name(self, what: str = "a name") -> ObjectName:
        parts = [self.identifier(what)]
        while self.accept_type(TokenType.DOT):
            parts.append(self.identifier(what))
        if len(parts) > 3:
            self.fail("at most database.schema.name")
        while len(parts) < 3:
            parts.insert(0, "")
        return ObjectName(parts[2], parts[1], parts[0])

    def simple_name(self, what: str = "a name") -> ObjectName:
        return ObjectName(self.identifier(what))

    def string(self, what: str = "a quoted string") -> str:
        token = self.peek()
        if token is not None and token.token_type in (TokenType.STRING, TokenType.HEREDOC_STRING,
                                                      TokenType.RAW_STRING):
            self.i += 1
            return token.text
        self.fail(what)
        return ""

    def value(self, kind: str, key: str) -> Any:
        token = self.peek()
        if token is None:
            self.fail(f"a value for {key}")
        assert token is not None
        if kind == "int":
            negative = self.accept_type(TokenType.DASH) is not None
            number = self.expect_type(TokenType.NUMBER, f"a whole number for {key}")
            try:
                value = int(number.text)
            except ValueError:
                self.i -= 1
                self.fail(f"a whole number for {key}")
            return -value if negative else value
        if kind == "bool":
            word = self.word()
            if word in ("TRUE", "FALSE"):
                self.i += 1
                return word == "TRUE"
            if token.token_type == TokenType.STRING and token.text.upper() in ("TRUE", "FALSE"):
                self.i += 1
                return token.text.upper() == "TRUE"
            self.fail(f"TRUE or FALSE for {key}")
        if kind == "str":
            return self.string(f"a quoted string for {key}")
        # "word": a bare word or a quoted string (INSTANCE_FAMILY = CPU_X64_M or 'CPU_X64_M')
        if token.token_type in (TokenType.STRING, TokenType.HEREDOC_STRING):
            self.i += 1
            return token.text
        if token.token_type == TokenType.IDENTIFIER:
            self.i += 1
            return token.text
        if self.word():
            parts = [self.identifier()]
            while self.accept_type(TokenType.DOT):
                parts.append(self.identifier())
            return ".".join(parts)
        if token.token_type == TokenType.NUMBER:
            self.i += 1
            return token.text
        self.fail(f"a value for {key}")
        return None

    def properties(self, allowed: dict[str, str], subject: str, stop: tuple[str, ...] = ()) -> dict[str, Any]:
        """``KEY = value`` pairs (spaces or commas between them) until the end or a stop word."""
        found: dict[str, Any] = {}
        while not self.at_end() and not any(self.at(*w.split()) for w in stop):
            self.accept_type(TokenType.COMMA)
            key_token = self.peek()
            key = self.word()
            if key not in allowed:
                self.fail(f"one of the {subject} properties {', '.join(allowed)}")
            self.i += 1
            self.expect_type(TokenType.EQ, f"'=' after {key}")
            if key in found:
                self.i -= 2
                assert key_token is not None
                self.fail(f"{key} only once")
            found[key] = self.value(allowed[key], key)
        return found

    def kind(self, kinds: tuple[str, ...], verb: str) -> str:
        for words, kind in KIND_WORDS:
            if kind in kinds and self.accept(*words):
                return kind
        self.fail(f"one of {', '.join(kinds)} after {verb}")
        return ""

    def if_exists(self) -> bool:
        return self.accept("IF", "EXISTS")

    def like(self) -> str | None:
        return self.string("a pattern after LIKE") if self.accept("LIKE") else None


# -- statement parsers ----------------------------------------------------------------------------
def _object_name(s: Stream, kind: str) -> ObjectName:
    if kind in A.SCHEMA_KINDS:
        return s.name(f"the {kind.lower()} name")
    return s.simple_name(f"the {kind.lower()} name")


def _model_source(s: Stream, name: ObjectName, or_replace: bool = False, if_not_exists: bool = False,
                  add_version: bool = False) -> S.Statement:
    """``[WITH] VERSION v FROM 'path' [COMMENT = '...']`` after the model name."""
    version = None
    if s.accept("WITH", "VERSION") or s.accept("VERSION"):
        version = s.identifier("the version name")
    elif add_version:
        s.fail("VERSION <name>")
    s.expect("FROM")
    if s.at("MODEL"):
        s.fail("a quoted path of a model directory: FROM 'path/to/mlflow_model' (copying another model with "
               "FROM MODEL is not supported)")
    source = s.string("a quoted path of a model directory, e.g. FROM 'path/to/mlflow_model'")
    props = s.properties({"COMMENT": "str"}, "model")
    return S.CreateModel(name=name, version=version, source=source, or_replace=or_replace,
                         if_not_exists=if_not_exists, comment=props.get("COMMENT"), add_version=add_version)


def parse_create(s: Stream) -> S.Statement:
    s.expect("CREATE")
    or_replace = s.accept("OR", "REPLACE")
    if s.accept("MODEL"):
        if_not_exists = s.accept("IF", "NOT", "EXISTS")
        return _model_source(s, s.name("the model name"), or_replace, if_not_exists)
    kind = s.kind(CREATE_KINDS, "CREATE")
    if_not_exists = s.accept("IF", "NOT", "EXISTS")
    name = _object_name(s, kind)
    s.accept("WITH")
    props = s.properties(CREATE_PROPERTIES[kind], kind.lower())
    if kind == A.COMPUTE_POOL:
        for required in ("MIN_NODES", "MAX_NODES", "INSTANCE_FAMILY"):
            if required not in props:
                s.fail(f"{required} = ... (CREATE COMPUTE POOL needs MIN_NODES, MAX_NODES and INSTANCE_FAMILY)")
    return S.Create(kind=kind, name=name, properties=props, or_replace=or_replace, if_not_exists=if_not_exists)


def parse_alter(s: Stream) -> S.Statement:
    s.expect("ALTER")
    kind = s.kind(ALTER_KINDS, "ALTER")
    if_exists = s.if_exists()
    name = _object_name(s, kind)
    settable = ALTER_SET_PROPERTIES[kind]
    if kind == A.USER and (s.at("ADD") or s.at("REMOVE")):
        action = "ADD TOKEN" if s.word() == "ADD" else "REMOVE TOKEN"
        s.i += 1
        if not (s.accept("PROGRAMMATIC", "ACCESS", "TOKEN") or s.accept("PAT")):
            s.fail("PROGRAMMATIC ACCESS TOKEN (or PAT)")
        token = s.identifier("the token name")
        props = s.properties(PAT_PROPERTIES, "programmatic access token") if action == "ADD TOKEN" else {}
        props["TOKEN_NAME"] = token
        return S.Alter(kind=kind, name=name, action=action, properties=props, if_exists=if_exists)
    if kind == A.MODEL and s.accept("ADD"):
        return _model_source(s, name, add_version=True)
    if kind == A.MODEL and s.accept("DROP", "VERSION"):
        return S.Alter(kind=kind, name=name, action="DROP VERSION",
                       properties={"VERSION": s.identifier("the version name")}, if_exists=if_exists)
    if kind == A.SERVICE and s.word() in settable:
        # the seed also writes ALTER SERVICE s MIN_INSTANCES = n, without SET
        return S.Alter(kind=kind, name=name, action="SET", properties=s.properties(settable, "service"),
                       if_exists=if_exists)
    if s.accept("SET"):
        props = s.properties(settable, kind.lower())
        if not props:
            s.fail(f"a property after SET: one of {', '.join(settable)}")
        return S.Alter(kind=kind, name=name, action="SET", properties=props, if_exists=if_exists)
    if s.accept("UNSET"):
        names: dict[str, Any] = {}
        while True:
            word = s.word()
            if word not in settable:
                s.fail(f"a property to unset: one of {', '.join(settable)}")
            s.i += 1
            names[word] = None
            if not s.accept_type(TokenType.COMMA):
                break
        return S.Alter(kind=kind, name=name, action="UNSET", properties=names, if_exists=if_exists)
    actions = {A.COMPUTE_POOL: ("SUSPEND", "RESUME", "STOP ALL"), A.WAREHOUSE: ("SUSPEND", "RESUME"), A.USER: (),
               A.SERVICE: ("SUSPEND", "RESUME"), A.MODEL: ()}
    for action in actions[kind]:
        if s.accept(*action.split()):
            if kind == A.WAREHOUSE and action == "RESUME":
                s.accept("IF", "SUSPENDED")
            return S.Alter(kind=kind, name=name, action=action, if_exists=if_exists)
    s.fail(" or ".join((*actions[kind], "SET", "UNSET")))
    raise AssertionError


def parse_drop(s: Stream) -> S.Statement:
    s.expect("DROP")
    kind = s.kind(DROP_KINDS, "DROP")
    if_exists = s.if_exists()
    return S.Drop(kind=kind, name=_object_name(s, kind), if_exists=if_exists)


def parse_show(s: Stream) -> S.Statement:
    s.expect("SHOW")
    s.accept("TERSE")
    for words in SHOW_WHATS:
        if s.accept(*words):
            what = " ".join(words)
            break
    else:
        s.fail("what to show")
        raise AssertionError
    if what == "IMAGES":
        s.expect("IN", "IMAGE", "REPOSITORY")
        return S.Show(what=what, in_kind=A.IMAGE_REPOSITORY, in_name=s.name("the image repository name"))
    if what == "GRANTS":
        return _parse_show_grants(s)
    if what == "USER PROGRAMMATIC ACCESS TOKENS":
        user = s.simple_name("the user name") if s.accept("FOR", "USER") else None
        return S.Show(what=what, in_kind=A.USER if user else None, in_name=user)
    like = s.like()
    if what in SHOW_IN:
        kind = SHOW_IN[what]
        s.expect("IN", *kind.split())
        name = s.name(f"the {kind.lower()} name")
        options: dict[str, Any] = {}
        if what == "FUNCTIONS" and s.accept("VERSION"):
            options["version"] = s.identifier("the version name")
        return S.Show(what=what, like=like, in_kind=kind, in_name=name, options=options)
    if what == "SERVICES":
        options = {"exclude_jobs": s.accept("EXCLUDE", "JOBS")}
        if s.accept("IN", "COMPUTE", "POOL"):
            return S.Show(what=what, like=like, in_kind=A.COMPUTE_POOL,
                          in_name=s.simple_name("the compute pool name"), options=options)
        if s.at_end():
            return S.Show(what=what, like=like, options=options)
    in_kind, in_name = None, None
    if s.accept("IN"):
        if s.accept("ACCOUNT"):
            in_kind = A.ACCOUNT
        elif s.accept("DATABASE"):
            in_kind, in_name = "DATABASE", s.simple_name("the database name")
        else:
            s.accept("SCHEMA")
            in_kind, in_name = "SCHEMA", s.name("the schema name")
    return S.Show(what=what, like=like, in_kind=in_kind, in_name=in_name)


def _parse_show_grants(s: Stream) -> S.Statement:
    if s.at_end():
        return S.Show(what="GRANTS")
    if s.accept("TO"):
        kind = "ROLE" if s.accept("ROLE") else ("USER" if s.accept("USER") else "")
        if not kind:
            s.fail("ROLE or USER after SHOW GRANTS TO")
        return S.Show(what="GRANTS", in_kind=f"TO {kind}", in_name=s.simple_name())
    if s.accept("OF"):
        s.expect("ROLE")
        return S.Show(what="GRANTS", in_kind="OF ROLE", in_name=s.simple_name())
    s.expect("ON")
    if s.accept("ACCOUNT"):
        return S.Show(what="GRANTS", in_kind="ON " + A.ACCOUNT)
    kind = s.kind(tuple(A.PRIVILEGES), "SHOW GRANTS ON")
    return S.Show(what="GRANTS", in_kind="ON " + kind, in_name=_object_name(s, kind))


def parse_describe(s: Stream) -> S.Statement:
    if not s.accept("DESCRIBE"):
        s.expect("DESC")
    kind = s.kind(DESCRIBE_KINDS, "DESCRIBE")
    return S.Describe(kind=kind, name=_object_name(s, kind))


def parse_use(s: Stream) -> S.Statement:
    s.expect("USE")
    if s.accept("SECONDARY", "ROLES"):
        return S.Use(kind="SECONDARY ROLES", name=ObjectName(s.word() or "NONE"))
    for kind in ("ROLE", "WAREHOUSE", "DATABASE"):
        if s.accept(kind):
            return S.Use(kind=kind, name=s.simple_name(f"the {kind.lower()} name"))
    s.expect("SCHEMA")
    return S.Use(kind="SCHEMA", name=s.name("the schema name"))


def _privileges(s: Stream) -> list[str]:
    found: list[str] = []
    while True:
        if s.accept("ALL"):
            s.accept("PRIVILEGES")
            found.append("ALL")
        else:
            for privilege in (*A.MULTIWORD_PRIVILEGES, "USAGE", "OPERATE", "MONITOR", "MODIFY", "OWNERSHIP",
                              "READ", "WRITE"):
                if s.accept(*privilege.split()):
                    found.append(privilege)
                    break
            else:
                s.fail("a privilege (USAGE, OPERATE, MONITOR, MODIFY, OWNERSHIP, READ, WRITE, SERVICE READ, "
                       "SERVICE WRITE, BIND SERVICE ENDPOINT, CREATE COMPUTE POOL, ...)")
        if not s.accept_type(TokenType.COMMA):
            return found


def parse_grant(s: Stream) -> S.Statement:
    revoke = s.word() == "REVOKE"
    s.i += 1
    to_word = "FROM" if revoke else "TO"
    if s.accept("ROLE"):
        role = s.identifier("the role name")
        s.expect(to_word)
        to_kind = "USER" if s.accept("USER") else ("ROLE" if s.accept("ROLE") else "")
        if not to_kind:
            s.fail(f"USER or ROLE after {to_word}")
        grantee = s.identifier(f"the {to_kind.lower()} name")
        s.end()
        return S.GrantRole(role=role, to_kind=to_kind, to_name=grantee, revoke=revoke)
    if s.accept("SERVICE", "ROLE"):
        service = s.name("the service name")
        s.expect_type(TokenType.NOT, "'!' between the service and its service role")
        service_role = s.identifier("the service role (ALL_ENDPOINTS_USAGE or INFERENCE_SERVICE_FUNCTION_USAGE)")
        s.expect(to_word, "ROLE")
        role = s.identifier("the role name")
        s.end()
        return S.GrantServiceRole(service=service, service_role=service_role, role=role, revoke=revoke)
    privileges = _privileges(s)
    s.expect("ON")
    if s.accept("ACCOUNT"):
        kind, name = A.ACCOUNT, None
    else:
        kind = s.kind(tuple(k for k in A.PRIVILEGES if k != A.ACCOUNT), "ON")
        name = _object_name(s, kind)
    s.expect(to_word)
    s.accept("ROLE")
    role = s.identifier("the role name")
    s.accept("WITH", "GRANT", "OPTION")
    if s.accept("COPY", "CURRENT", "GRANTS") or s.accept("REVOKE", "CURRENT", "GRANTS") or s.accept("CASCADE"):
        pass
    s.accept("RESTRICT")
    s.end()
    return S.GrantPrivileges(privileges=privileges, on_kind=kind, on_name=name, role=role, revoke=revoke)


def parse_call(s: Stream) -> S.Statement:
    s.expect("CALL")
    function = s.word()
    s.i += 1
    s.expect_type(TokenType.L_PAREN, f"'(' after {function}")
    args: list[Any] = []
    while not s.accept_type(TokenType.R_PAREN):
        if args:
            s.expect_type(TokenType.COMMA, "',' or ')'")
        token = s.peek()
        if token is None:
            s.fail("')'")
        assert token is not None
        if token.token_type == TokenType.NUMBER:
            s.i += 1
            args.append(int(token.text) if token.text.isdigit() else float(token.text))
        elif token.token_type == TokenType.DASH:
            s.i += 1
            number = s.expect_type(TokenType.NUMBER, "a number")
            args.append(-int(number.text) if number.text.isdigit() else -float(number.text))
        else:
            args.append(s.value("word", f"argument {len(args) + 1} of {function}"))
    s.end()
    return S.Call(function=function, arguments=args)


def _is_create(s: Stream) -> bool:
    k = 3 if s.at("CREATE", "OR", "REPLACE") else 1
    if s.word(k) == "MODEL":
        return True
    return any(all(s.word(k + j) == w for j, w in enumerate(words)) for words, kind in KIND_WORDS
               if kind in CREATE_KINDS)


def _follows_kind(kinds: tuple[str, ...], named: bool = False) -> Callable[[Stream], bool]:
    """``VERB <kind words>`` (``named``: and a name after them, so ``DESCRIBE user`` stays DuckDB's)."""
    def test(s: Stream) -> bool:
        for words, kind in KIND_WORDS:
            if kind in kinds and all(s.word(1 + j) == w for j, w in enumerate(words)):
                return not named or _is_name(s.peek(1 + len(words)))
        return False
    return test


def _is_name(token: Token | None) -> bool:
    return token is not None and (token.token_type == TokenType.IDENTIFIER or bool(_WORD.match(token.text))) \
        and token.token_type not in _LITERAL_TYPES - {TokenType.IDENTIFIER}


def _is_use(s: Stream) -> bool:
    """``USE ROLE r`` is ours; ``USE role`` (DuckDB's catalog named role) and ``USE database.s`` are DuckDB's."""
    return s.word(1) in ("ROLE", "WAREHOUSE", "DATABASE", "SCHEMA", "SECONDARY") and _is_name(s.peek(2))


def _is_show(s: Stream) -> bool:
    """One of our SHOW forms; the bare ``SHOW <word>`` (DuckDB's DESCRIBE of a table) is DuckDB's when
    DuckDB sees a table, view or Python variable of that name."""
    skip = 1 if s.word(1) == "TERSE" else 0
    for words in SHOW_WHATS:
        if all(s.word(1 + skip + j) == w for j, w in enumerate(words)):
            bare = not skip and len(words) == 1 and len(s.tokens) == 2
            return not (bare and s.duckdb_sees(s.tokens[1].text))
    return False


#: leading word -> (is this statement ours?, parse function)
STATEMENT_PARSERS: dict[str, tuple[Callable[[Stream], bool], Callable[[Stream], S.Statement]]] = {
    "CREATE": (_is_create, parse_create),
    "ALTER": (_follows_kind(ALTER_KINDS), parse_alter),
    "DROP": (_follows_kind(DROP_KINDS), parse_drop),
    "SHOW": (_is_show, parse_show),
    "DESCRIBE": (_follows_kind(DESCRIBE_KINDS, named=True), parse_describe),
    "DESC": (_follows_kind(DESCRIBE_KINDS, named=True), parse_describe),
    "USE": (_is_use, parse_use),
    "GRANT": (lambda s: True, parse_grant),
    "REVOKE": (lambda s: True, parse_grant),
    "CALL": (lambda s: s.word(1).startswith("SYSTEM$"), parse_call),
}


#: words without which a script holds nothing of ours: our statements' leading words, the
#: rewritten calls (``svc!m(``, ``RESULT_SCAN``) and the transaction statements the connection follows
_TRIGGER_WORDS = (*STATEMENT_PARSERS, "RESULT_SCAN", "TELEMETRY", "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT")
_MAY_BE_OURS = re.compile(r"!\s*[\w\"]|\b(?:" + "|".join(w.replace("$", r"\$") for w in _TRIGGER_WORDS) + r")\b",
                          re.IGNORECASE)


def may_be_ours(sql: str) -> bool:
    """False when the script certainly holds nothing of ours (then DuckDB gets it whole, untouched).
    A substring test first: most statements name none of the words, and it costs a microsecond."""
    upper = sql.upper()
    if "!" not in upper and not any(word in upper for word in _TRIGGER_WORDS):
        return False
    return _MAY_BE_OURS.search(sql) is not None


def is_ours(source: Source, duckdb_sees: Callable[[str], bool] | None = None) -> bool:
    """Whether the statement is one of duckserve's (without parsing it whole). Where a form is both
    ours and DuckDB's, DuckDB's wins: see ``_is_show``, ``_is_use`` and ``_follows_kind``."""
    s = Stream(source, duckdb_sees)
    entry = STATEMENT_PARSERS.get(s.word())
    return entry is not None and entry[0](s)


def parse(source: Source, duckdb_sees: Callable[[str], bool] | None = None) -> S.Statement | None:
    """The typed statement, or None when the statement is DuckDB's."""
    if not is_ours(source, duckdb_sees):
        return None
    s = Stream(source)
    statement = STATEMENT_PARSERS[s.word()][1](s)
    s.end()
    statement.sql = source.text
    return statement
