"""Security: tokens on every RPC (S1), health without a token (S2), loopback by default (S8), TLS and mutual
TLS (S6, the core of the grid)."""
from __future__ import annotations

import shutil
import subprocess

import grpc
import pytest

from conftest import TOKEN_A, coeff_rows, wait_idle
from otavatar.client import AvatarClient, ClientTLS
from otavatar.server._proto import avatar_pb2 as pb
from otavatar.server._proto import avatar_pb2_grpc as pb_grpc

BAD_METADATA = {
    "none": (),
    "wrong token": (("authorization", "Bearer " + "z" * 32),),
    "no scheme": (("authorization", TOKEN_A),),
    "basic scheme": (("authorization", f"Basic {TOKEN_A}"),),
    "wrong header": (("x-api-key", f"Bearer {TOKEN_A}"),),
    "two headers": (("authorization", f"Bearer {TOKEN_A}"), ("authorization", f"Bearer {TOKEN_A}")),
}


def _calls(stub, avatar_id):
    return {
        "CreateAvatar": lambda md: list(stub.CreateAvatar(pb.CreateAvatarRequest(image=b"x", aligned=True),
                                                          metadata=md)),
        "GetAvatar": lambda md: stub.GetAvatar(pb.GetAvatarRequest(avatar_id=avatar_id), metadata=md),
        "ListAvatars": lambda md: stub.ListAvatars(pb.ListAvatarsRequest(), metadata=md),
        "DeleteAvatar": lambda md: stub.DeleteAvatar(pb.DeleteAvatarRequest(avatar_id=avatar_id), metadata=md),
        "ImportAvatar": lambda md: stub.ImportAvatar(pb.ImportAvatarRequest(avatar_file=b"x"), metadata=md),
        "ExportAvatar": lambda md: stub.ExportAvatar(pb.ExportAvatarRequest(avatar_id=avatar_id), metadata=md),
        "GetServerInfo": lambda md: stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md),
        "RenderStream": lambda md: list(stub.RenderStream(iter([pb.RenderRequest(
            header=pb.StreamHeader(avatar_id=avatar_id))]), metadata=md)),
    }


def test_s1_every_rpc_needs_a_valid_token(server, client, ready_avatar):
    before = (len(client.list_avatars()), server.stats.streams_opened, server.stats.frames_rendered)
    grid = {}
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.AvatarServiceStub(channel)
        for rpc, call in _calls(stub, ready_avatar).items():
            for case, metadata in BAD_METADATA.items():
                with pytest.raises(grpc.RpcError) as err:
                    call(metadata)
                grid[rpc, case] = err.value.code()
    wrong = {k: v for k, v in grid.items() if v != grpc.StatusCode.UNAUTHENTICATED}
    assert not wrong, wrong
    after = (len(client.list_avatars()), server.stats.streams_opened, server.stats.frames_rendered)
    assert after == before                                   # no side effects: nothing created, opened, rendered
    assert client.get_avatar(ready_avatar).state == "READY"  # the DeleteAvatar attempts did nothing
    wait_idle(server)


def test_s2_health_answers_without_a_token(server):
    with AvatarClient(f"127.0.0.1:{server.port}") as anonymous:
        assert anonymous.health() == "SERVING"
        assert anonymous.health("avatar.v1.AvatarService") == "SERVING"


def test_s8_loopback_by_default(server):
    from click.testing import CliRunner

    from otavatar.cli import main
    from otavatar.server import ServerConfig

    assert ServerConfig(models=".", data=".").host == "127.0.0.1"
    assert "default: 127.0.0.1" in CliRunner().invoke(main, ["serve", "--help"]).output.replace("\n", " ")
    # the listening socket of the (default-host) test server is bound to 127.0.0.1 only
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, port = local.rsplit(":", 1)
            if int(port, 16) == server.port and state == "0A":       # 0A = LISTEN
                listening.add(address)
    # 127.0.0.1 (little-endian hex), possibly as the IPv4-mapped IPv6 address ::ffff:127.0.0.1
    assert listening and listening <= {"0100007F", "0000000000000000FFFF00000100007F"}, listening


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=otavatar-test-ca", cwd=d)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem", "-days",
             "2", "-subj", "/CN=another-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
                 f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    return d


def _tls_server(tiny_model, tmp_path, pki, mutual):
    from otavatar.server import Server, ServerConfig

    return Server(ServerConfig(models=tiny_model.onnx, data=tmp_path / "data", port=0, tls_cert=pki / "server.pem",
                               tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem" if mutual else None,
                               threads=1, weights=tiny_model.weights), log=lambda m: None).start()


def _works(target, **kwargs):
    with AvatarClient(target, **kwargs) as c:
        try:
            c.server_info(timeout=5)
            return True
        except grpc.RpcError:
            return False


def test_s6_tls_and_mutual_tls(tiny_model, tmp_path, pki, avatar_file):
    server = _tls_server(tiny_model, tmp_path / "one", pki, mutual=False)
    try:
        target = f"127.0.0.1:{server.port}"
        assert _works(target, tls=ClientTLS(ca_cert=pki / "ca.pem"))
        assert not _works(target)                                               # plaintext client
        assert not _works(target, tls=ClientTLS(ca_cert=pki / "other.pem"))    # wrong CA
        with AvatarClient(target, tls=ClientTLS(ca_cert=pki / "ca.pem")) as c:
            avatar_id = c.import_avatar(avatar_file)
            assert next(c.stream(avatar_id, coeff_rows(1), window="causal")).shape == (128, 128, 3)
    finally:
        server.stop(grace=1.0)
    server = _tls_server(tiny_model, tmp_path / "two", pki, mutual=True)
    try:
        target = f"127.0.0.1:{server.port}"
        assert _works(target, tls=ClientTLS(ca_cert=pki / "ca.pem", client_cert=pki / "client.pem",
                                            client_key=pki / "client.key"))
        assert not _works(target, tls=ClientTLS(ca_cert=pki / "ca.pem"))       # no client certificate
    finally:
        server.stop(grace=1.0)
