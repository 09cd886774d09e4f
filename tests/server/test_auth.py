"""Security: tokens on every RPC (S1), health without a token (S2), loopback by default (S8), TLS and mutual
TLS (S6, the core of the grid), tokens in plaintext only on loopback or with --insecure (S7), nothing secret in
the log (S9)."""
from __future__ import annotations

import base64
import re
import secrets
import shutil
import subprocess

import grpc
import pytest

from conftest import TOKEN_A, ServerProcess, coeff_rows, token_file, wait_idle
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


NOT_LOOPBACK = ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "server.example"]
LOOPBACK = ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST", "::ffff:127.0.0.1"]


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_s7_tokens_in_plaintext_beyond_loopback_need_insecure(tmp_path, host):
    from otavatar.server import ServerConfig

    tokens = token_file(tmp_path)
    with pytest.raises(ValueError, match="--insecure"):
        ServerConfig(models=".", data=".", host=host, tokens=tokens)
    assert ServerConfig(models=".", data=".", host=host, tokens=tokens, insecure=True).insecure
    ServerConfig(models=".", data=".", host=host, tokens=tokens, tls_cert="c.pem", tls_key="k.pem")  # TLS
    ServerConfig(models=".", data=".", host=host)                                                # no token


@pytest.mark.parametrize("host", LOOPBACK)
def test_s7_tokens_in_plaintext_on_loopback_are_allowed(tmp_path, host):
    from otavatar.server import ServerConfig

    assert not ServerConfig(models=".", data=".", host=host, tokens=token_file(tmp_path)).insecure


def test_s7_serve_refuses_before_starting(tmp_path):
    from click.testing import CliRunner

    from otavatar.cli import main

    args = ["serve", "--models", str(tmp_path), "--data", str(tmp_path / "data"), "--host", "0.0.0.0",
            "--token-file", str(token_file(tmp_path))]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--insecure" in result.output, result.output   # a usage error
    assert not (tmp_path / "data").exists()                                         # nothing started
    assert "--insecure" in CliRunner().invoke(main, ["serve", "--help"]).output


BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{64,}")   # 48+ bytes of base64: image bytes, latents, long secrets


def test_s9_the_log_holds_no_token_image_or_latent(tiny_model, tmp_path, avatar_file, portrait):
    """`otavatar serve` stderr after good and bad tokens, an import, an export, a CreateAvatar, a stream and
    refused streams: no token value, no long base64 run."""
    good, bad = "s9-good-" + secrets.token_hex(16), "s9-bad-" + secrets.token_hex(16)
    (tmp_path / "tokens.txt").write_text(f"{good} alice\n")
    server = ServerProcess(tiny_model, tmp_path / "data", extra=("--token-file", str(tmp_path / "tokens.txt")))
    try:
        server.wait_serving()
        image, camera = portrait
        with AvatarClient(server.target, token=good) as c:
            imported = c.import_avatar(avatar_file)
            assert c.export_avatar(imported)
            assert next(c.stream(imported, coeff_rows(1), window="causal")).shape == (128, 128, 3)
            created = c.create_avatar(image, camera=camera, aligned=True)
            assert c.get_avatar(created).state == "READY"
            with pytest.raises(grpc.RpcError) as err:                  # refused: unknown avatar
                list(c.stream("av_" + "0" * 32, coeff_rows(1)))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with AvatarClient(server.target, token=bad) as c:
            for call in (c.list_avatars, lambda: list(c.stream(imported, coeff_rows(1)))):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert server.terminate() == 0, server.log.read_text()
    finally:
        server.kill9()
    log = server.log.read_text()
    assert BASE64_RUN.search(base64.b64encode(image).decode())     # the pattern finds what it looks for
    assert "serving" in log and "stopped" in log, log              # the log was captured
    assert good not in log and bad not in log
    assert not BASE64_RUN.findall(log), BASE64_RUN.findall(log)
