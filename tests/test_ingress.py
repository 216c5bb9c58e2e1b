"""The ingress against real servers: an inference server serving a scikit-learn package, and
``python -m duckserve.fronts.ingress`` in front of it, with tokens and grants from the catalog."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from duckserve.engine import access as A
from duckserve.engine import tokens as T
from duckserve.engine.account import Account, Session
from duckserve.engine.catalog import CatalogObject
from duckserve.engine.names import ObjectName
from duckserve.fronts.ingress import instance_urls, parse_service_name
from tests.servers import Server, start_inference_server, start_ingress

pytestmark = pytest.mark.xdist_group("server")

DATABASE, SCHEMA = "DUCKSERVE", "PUBLIC"


def insert_service(account: Account, name: str, owner: str, ports: list[int]) -> CatalogObject:
    service = CatalogObject(
        A.SERVICE, name, owner=owner, database=DATABASE, schema=SCHEMA,
        props={"status": "RUNNING", "instances": [{"instance_id": i, "handle": {"port": port}}
                                                  for i, port in enumerate(ports)]},
    )
    account.catalog.insert(service)
    return service


@dataclass
class World:
    home: Path
    account: Account
    admin: Session
    features: pd.DataFrame
    expected_predict: list[Any]
    expected_proba: np.ndarray
    package: Path
    workdir: Path
    secrets: dict[str, str] = field(default_factory=dict)
    servers: list[Server] = field(default_factory=list)
    ingress: Server | None = None

    def request(self, method: str, rows: pd.DataFrame | None = None, secret: str | None = None,
                bearer: bool = False, ingress: Server | None = None) -> httpx.Response:
        frame = self.features if rows is None else rows
        body = {"data": [[i, *map(float, row)] for i, row in enumerate(frame.itertuples(index=False))]}
        headers = {}
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}" if bearer else f'Snowflake Token="{secret}"'
        target = ingress or self.ingress
        assert target is not None
        with httpx.Client(trust_env=False, timeout=30.0) as client:
            return client.post(f"{target.url}/{method}", json=body, headers=headers)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from sklearn.linear_model import LogisticRegression

    from duckserve.inference_server.handlers import save_package

    base = tmp_path_factory.mktemp("ingress")
    rng = np.random.default_rng(7)
    features = pd.DataFrame(rng.normal(size=(60, 3)), columns=["F1", "F2", "F3"])
    labels = (features["F1"] + 0.5 * features["F2"] - features["F3"] > 0).astype(int)
    model = LogisticRegression().fit(features, labels)
    package = base / "package"
    save_package(model, package, name="CLASSIFIER", version="V1", sample_input=features.head(5))

    home = base / "home"
    account = Account(home)
    admin = account.open_session()
    for role in ("SVC_OWNER", "CALLER", "STRANGER"):
        account.create_role(admin, role)
    for user, role in (("OWNER_USER", "SVC_OWNER"), ("CALLER_USER", "CALLER"), ("STRANGER_USER", "STRANGER")):
        account.create_user(admin, user, settings={"DEFAULT_ROLE": role})
        account.grant_role(admin, role, A.USER, user)
    world = World(home, account, admin, features, model.predict(features).tolist(), model.predict_proba(features),
                  package, base / "run")
    for user in ("OWNER_USER", "CALLER_USER", "STRANGER_USER", "ADMIN"):
        world.secrets[user] = str(T.add_token(account, admin, user, "INGRESS_TEST").rows[0][1])
    try:
        instance = start_inference_server(package, world.workdir, "instance")
        world.servers.append(instance)
        insert_service(account, "CLF_SERVICE", "SVC_OWNER", [instance.port])
        account.grant_service_role(admin, ObjectName("CLF_SERVICE", SCHEMA, DATABASE), "ALL_ENDPOINTS_USAGE",
                                   "CALLER")
        world.ingress = start_ingress(home, f"{DATABASE}.{SCHEMA}.clf_service", world.workdir)
        world.servers.append(world.ingress)
        yield world
    finally:
        for server in world.servers:
            server.stop()


def predictions(response: httpx.Response, world: World) -> list[Any]:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [row[0] for row in data] == list(range(len(world.features)))
    return [row[1] for row in data]


def test_healthz(world: World) -> None:
    assert world.ingress is not None
    with httpx.Client(trust_env=False) as client:
        assert client.get(world.ingress.url + "/healthz").status_code == 200


def test_unauthenticated_requests_get_401_with_the_fix(world: World) -> None:
    for secret in (None, "dspat_not-a-token", ""):
        response = world.request("predict", secret=secret)
        assert response.status_code == 401, response.text
        assert "ADD PROGRAMMATIC ACCESS TOKEN" in response.json()["error"]
        assert "CLF_SERVICE" in response.json()["error"]
    with httpx.Client(trust_env=False) as client:
        assert world.ingress is not None
        answer = client.post(world.ingress.url + "/predict", json={"data": []},
                             headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert answer.status_code == 401


def test_expired_token_gets_401(world: World) -> None:
    secret = str(T.add_token(world.account, world.admin, "OWNER_USER", "SOON_EXPIRED").rows[0][1])
    token = world.account.catalog.get(T.TOKEN_KIND, "OWNER_USER/SOON_EXPIRED")
    assert token is not None
    token.props["expires_at"] = "2000-01-01T00:00:00+00:00"
    world.account.catalog.update(token)
    response = world.request("predict", secret=secret)
    assert response.status_code == 401
    assert "expired" in response.json()["error"]


def test_role_without_grant_gets_403_naming_the_grant(world: World) -> None:
    response = world.request("predict", secret=world.secrets["STRANGER_USER"])
    assert response.status_code == 403, response.text
    assert ("GRANT SERVICE ROLE DUCKSERVE.PUBLIC.CLF_SERVICE!ALL_ENDPOINTS_USAGE TO ROLE STRANGER"
            in response.json()["error"])


@pytest.mark.parametrize("user", ["OWNER_USER", "CALLER_USER", "ADMIN"])
@pytest.mark.parametrize("bearer", [False, True])
def test_owner_grantee_and_admin_get_predictions(world: World, user: str, bearer: bool) -> None:
    response = world.request("predict", secret=world.secrets[user], bearer=bearer)
    assert response.headers["content-type"].startswith("application/json")
    assert predictions(response, world) == world.expected_predict


@pytest.mark.parametrize("path", ["predict-proba", "predict_proba"])
def test_predict_proba_in_both_url_forms(world: World, path: str) -> None:
    got = predictions(world.request(path, secret=world.secrets["CALLER_USER"]), world)
    values = np.array([list(v.values()) if isinstance(v, dict) else v for v in got], dtype=float)
    np.testing.assert_allclose(values, world.expected_proba, rtol=1e-6)


def test_instance_errors_pass_through(world: World) -> None:
    response = world.request("no_such_method", secret=world.secrets["OWNER_USER"])
    assert response.status_code == 404
    assert "error" in response.json()
    with httpx.Client(trust_env=False) as client:
        assert world.ingress is not None
        answer = client.post(world.ingress.url + "/predict", content=b"not json",
                             headers={"Authorization": f"Bearer {world.secrets['OWNER_USER']}",
                                      "content-type": "application/json"})
    assert answer.status_code == 400, answer.text


def test_grant_and_revoke_take_effect_on_the_very_next_request(world: World) -> None:
    service = ObjectName("CLF_SERVICE", SCHEMA, DATABASE)
    secret = world.secrets["STRANGER_USER"]
    assert world.request("predict", secret=secret).status_code == 403
    world.account.grant_service_role(world.admin, service, "ALL_ENDPOINTS_USAGE", "STRANGER")
    assert world.request("predict", secret=secret).status_code == 200
    world.account.grant_service_role(world.admin, service, "ALL_ENDPOINTS_USAGE", "STRANGER", revoke=True)
    assert world.request("predict", secret=secret).status_code == 403


def test_a_removed_token_is_refused_on_the_very_next_request(world: World) -> None:
    secret = str(T.add_token(world.account, world.admin, "CALLER_USER", "SHORT_LIVED").rows[0][1])
    assert world.request("predict", secret=secret).status_code == 200
    T.remove_token(world.account, world.admin, "CALLER_USER", "SHORT_LIVED")
    response = world.request("predict", secret=secret)
    assert response.status_code == 401 and "not valid" in response.json()["error"]


def test_dropped_service_gets_404(world: World) -> None:
    assert world.servers
    # a quoted lower-case name, passed the way the catalog keys it (DB.SCHEMA.name, unquoted)
    service = insert_service(world.account, "short_lived", "SVC_OWNER", [world.servers[0].port])
    ingress = start_ingress(world.home, service.key, world.workdir, "ingress_short")
    try:
        secret = world.secrets["OWNER_USER"]
        assert world.request("predict", secret=secret, ingress=ingress).status_code == 200
        world.account.catalog.delete(service)
        response = world.request("predict", secret=secret, ingress=ingress)
        assert response.status_code == 404, response.text
        assert "short_lived" in response.json()["error"].lower()
    finally:
        ingress.stop()


def test_fails_over_then_503_when_every_instance_is_gone(world: World) -> None:
    first = start_inference_server(world.package, world.workdir, "doomed_1")
    second = start_inference_server(world.package, world.workdir, "doomed_2")
    ingress = None
    try:
        insert_service(world.account, "DOOMED", "SVC_OWNER", [first.port, second.port])
        ingress = start_ingress(world.home, f"{DATABASE}.{SCHEMA}.DOOMED", world.workdir, "ingress_doomed")
        secret = world.secrets["OWNER_USER"]
        first.process.kill()
        first.process.wait(10)
        for _ in range(4):  # round robin reaches the dead instance and moves on
            assert predictions(world.request("predict", secret=secret, ingress=ingress), world) == \
                world.expected_predict
        second.process.kill()
        second.process.wait(10)
        response = world.request("predict", secret=secret, ingress=ingress)
        assert response.status_code == 503, response.text
        assert "DOOMED" in response.json()["error"]
        log = ingress.log()
        assert "POST /predict 503" in log and "user=OWNER_USER" in log
    finally:
        for server in (first, second, ingress):
            if server is not None:
                server.stop()


def test_service_without_instances_gets_503(world: World) -> None:
    insert_service(world.account, "EMPTY", "SVC_OWNER", [])
    service = world.account.catalog.get(A.SERVICE, "EMPTY", DATABASE, SCHEMA)
    assert service is not None
    service.props["status"] = "SUSPENDED"
    world.account.catalog.update(service)
    ingress = start_ingress(world.home, f"{DATABASE}.{SCHEMA}.EMPTY", world.workdir, "ingress_empty")
    try:
        response = world.request("predict", secret=world.secrets["ADMIN"], ingress=ingress)
        assert response.status_code == 503
        assert "ALTER SERVICE DUCKSERVE.PUBLIC.EMPTY RESUME" in response.json()["error"]
    finally:
        ingress.stop()


def test_instance_urls_and_service_names() -> None:
    record = CatalogObject(A.SERVICE, "S", "R", props={"instances": [
        {"instance_id": 0, "handle": {"port": 5000}},
        {"instance_id": 1, "handle": {"port": None}},
        {"instance_id": 2, "handle": {"port": 5002}, "status": "FAILED"},
        {"instance_id": 3, "handle": {"port": 5003}},
    ]})
    assert instance_urls(record) == [(0, "http://127.0.0.1:5000"), (3, "http://127.0.0.1:5003")]
    assert parse_service_name('db."My Schema".svc') == ObjectName("SVC", "My Schema", "DB")
    assert parse_service_name("svc") == ObjectName("SVC")
    assert parse_service_name("DB.S.my_svc", keep_case=True) == ObjectName("my_svc", "S", "DB")
