"""An ingress that holds: size limits, slow clients, connection bounds, malformed HTTP, TLS, and
tokens kept out of logs, against a real ingress and a real instance, with raw sockets where a
well-behaved client library would not misbehave."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from duckserve.engine import access as A
from duckserve.engine import tokens as T
from duckserve.engine.account import Account
from duckserve.engine.catalog import CatalogObject
from duckserve.inference_server.handlers import save_package
from tests.servers import Server, start_inference_server, start_ingress

pytestmark = pytest.mark.xdist_group("server")

KEY = "DUCKSERVE.PUBLIC.LIMITED"
LIMIT_BYTES = 20_000


@dataclass
class World:
    base: Path
    secret: str
    ingress: Server
    instance: Server

    def body(self, rows: int = 1) -> bytes:
        return json.dumps({"data": [[i, 0.5, -0.5, 1.0] for i in range(rows)]}).encode()

    def request(self, body: bytes, extra: str = "") -> bytes:
        return (f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                f"authorization: Bearer {self.secret}\r\n{extra}content-length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from sklearn.linear_model import LogisticRegression

    base = tmp_path_factory.mktemp("limits")
    rng = np.random.default_rng(3)
    features = pd.DataFrame(rng.normal(size=(30, 3)), columns=["F1", "F2", "F3"])
    model = LogisticRegression().fit(features, (features["F1"] > 0).astype(int))
    save_package(model, base / "package", name="LIMITED", version="V1", sample_input=features.head(5))
    account = Account(base / "home")
    admin = account.open_session()
    secret = str(T.add_token(account, admin, "ADMIN", "LIMITS").rows[0][1])
    instance = start_inference_server(base / "package", base / "run", "instance", service=KEY)
    account.catalog.insert(CatalogObject(A.SERVICE, "LIMITED", owner=A.ACCOUNTADMIN, database="DUCKSERVE",
                                         schema="PUBLIC", props={"status": "RUNNING", "instances": [
                                             {"instance_id": 0, "handle": {"port": instance.port}}]}))
    ingress = start_ingress(base / "home", KEY, base / "run", extra=[
        "--max-body-mb", str(LIMIT_BYTES / 2**20), "--head-timeout", "1", "--body-timeout", "1",
        "--max-connections", "20"])
    try:
        yield World(base, secret, ingress, instance)
    finally:
        ingress.stop()
        instance.stop()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


#: bytes a socket received past the answer `read_answer` returned: pipelined answers often arrive in
#: one recv, and dropping the rest would leave the next read waiting for an answer already read
_unread: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = _unread.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(rest)} of {length} body bytes")
        rest += chunk
    if rest[length:]:
        _unread[sock] = rest[length:]
    return int(lines[0].split()[1]), headers, rest[:length]


def exchange(server: Server, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock:
        sock.sendall(raw)
        return read_answer(sock)


def test_a_body_over_the_limit_is_413_naming_the_limit(world: World) -> None:
    status, headers, body = exchange(world.ingress, world.request(b"x" * (LIMIT_BYTES + 1)))
    assert status == 413 and headers["content-type"] == "application/json"
    assert str(LIMIT_BYTES) in json.loads(body)["error"]
    # announced by Content-Length, refused before the body is sent
    with connect(world.ingress) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999\r\n\r\n")
        assert read_answer(sock)[0] == 413
    import gzip

    bomb = gzip.compress(b"[" * (LIMIT_BYTES * 20))
    status, _, body = exchange(world.ingress, world.request(bomb, "content-encoding: gzip\r\n"))
    assert status == 413 and "decompressed" in json.loads(body)["error"]


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST /predict HTTP/9.9\r\nhost: x\r\n\r\n", 505),
    (b"POST /predict HTTP/1.1\r\ncontent-length: -4\r\n\r\n", 400),
    (b"POST /predict HTTP/1.1\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n", 400),
    (b"POST /predict HTTP/1.1\r\nbad header line\r\n\r\n", 400),
    (b"BREW /predict HTTP/1.1\r\n\r\n", 501),
    (b"POST /predict HTTP/1.1\r\nx: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"DELETE /predict HTTP/1.1\r\ncontent-length: 0\r\n\r\n", 405),
    (b"POST /a/b/c HTTP/1.1\r\ncontent-length: 0\r\n\r\n", 404),
])
def test_malformed_requests_get_a_4xx_json_error(world: World, raw: bytes, status: int) -> None:
    got, headers, body = exchange(world.ingress, raw)
    assert got == status, body
    assert headers["content-type"] == "application/json" and json.loads(body)["error"]


def test_chunked_pipelined_and_expect_continue_requests(world: World) -> None:
    body = world.body(2)
    chunked = (f"POST /predict HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {world.secret}\r\n"
               "transfer-encoding: chunked\r\n\r\n").encode()
    chunked += b"%x\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:]) + b"0\r\n\r\n"
    with connect(world.ingress) as sock:
        sock.sendall(chunked + world.request(world.body(3)))  # two requests at once, answered in order
        time.sleep(0.3)  # both answers are sent before the first is read: they arrive in one recv
        first, second = read_answer(sock), read_answer(sock)
        assert first[0] == 200 and len(json.loads(first[2])["data"]) == 2
        assert second[0] == 200 and len(json.loads(second[2])["data"]) == 3
        sock.sendall(world.request(b"", "expect: 100-continue\r\n").replace(b"content-length: 0", b"content-length: "
                                                                             + str(len(body)).encode()))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert read_answer(sock)[0] == 200


def test_slow_clients_time_out_and_do_not_starve_the_others(world: World) -> None:
    slow_head = connect(world.ingress)
    slow_head.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\n")  # and never the rest
    slow_body = connect(world.ingress)
    slow_body.sendall(world.request(world.body(5))[:-20])  # the body never completes
    started = time.monotonic()
    with httpx.Client(trust_env=False, timeout=5) as client:
        for _ in range(20):
            answer = client.post(world.ingress.url + "/predict", content=world.body(),
                                 headers={"authorization": f"Bearer {world.secret}"})
            assert answer.status_code == 200
    assert time.monotonic() - started < 3
    for sock in (slow_head, slow_body):
        status, _, body = read_answer(sock)
        assert status == 408 and "within 1 s" in json.loads(body)["error"]
        assert sock.recv(10) == b""  # and closed
        sock.close()


def test_connections_beyond_the_bound_get_503_and_the_others_work(world: World) -> None:
    idle = [connect(world.ingress) for _ in range(20)]
    try:
        time.sleep(0.3)
        status, _, body = exchange(world.ingress, world.request(world.body()))
        assert status == 503 and "20" in json.loads(body)["error"]
        idle[0].sendall(world.request(world.body()))  # the connections already open are served
        assert read_answer(idle[0])[0] == 200
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert exchange(world.ingress, world.request(world.body()))[0] == 200


def test_tokens_never_appear_in_logs(world: World) -> None:
    with httpx.Client(trust_env=False) as client:
        client.post(world.ingress.url + "/predict", content=world.body(),
                    headers={"authorization": f"Bearer {world.secret}"})
        client.post(world.ingress.url + "/predict", content=world.body(), headers={"authorization": "Bearer dspat_wrong"})
    for server in (world.ingress, world.instance):
        assert world.secret not in server.log() and "dspat_wrong" not in server.log()
    assert "user=ADMIN" in world.ingress.log()


def self_signed_certificate(cert: Path, key: Path) -> None:
    """A certificate for 127.0.0.1, made with the cryptography package (openssl's command where it lacks)."""
    try:
        import datetime as dt
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        return
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))


def test_tls_with_a_certificate_and_a_warning_beyond_loopback(world: World, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed_certificate(cert, key)
    context = ssl.create_default_context(cafile=str(cert))
    secure = start_ingress(world.base / "home", KEY, tmp_path, "tls_ingress", scheme="https", verify=context,
                           extra=["--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        with httpx.Client(trust_env=False, verify=context) as client:
            answer = client.post(secure.url + "/predict", content=world.body(),
                                 headers={"authorization": f"Bearer {world.secret}"})
        assert answer.status_code == 200 and answer.json()["data"][0][0] == 0
        assert "listening on https://" in secure.log() and "WARNING" not in secure.log()
    finally:
        secure.stop()
    exposed = start_ingress(world.base / "home", KEY, tmp_path, "exposed_ingress", extra=["--host", "0.0.0.0"])
    try:
        assert "without TLS" in exposed.log() and "WARNING" in exposed.log()
    finally:
        exposed.stop()
