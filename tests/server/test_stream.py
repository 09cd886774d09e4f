"""RenderStream against an in-process server: frames, header-first protocol, bad frames (B3-B5, B10, B11),
slow consumer (F3), deadlines (F4), cancellation (F1, in process), admission, idle streams."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from conftest import TOKEN_A, coeff_rows, wait_idle
from otavatar.server._proto import avatar_pb2 as pb
from otavatar.server._proto import avatar_pb2_grpc as pb_grpc

META = (("authorization", f"Bearer {TOKEN_A}"),)


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.AvatarServiceStub(channel)


def header(avatar_id, **kw):
    return pb.RenderRequest(header=pb.StreamHeader(avatar_id=avatar_id, window_mode=pb.CAUSAL, **kw))


def frame(index, coeffs=None, camera=()):
    coeffs = np.zeros(70, np.float32) if coeffs is None else coeffs
    return pb.RenderRequest(frame=pb.CoefficientFrame(index=index, coeffs=list(coeffs), camera=list(camera)))


END = pb.RenderRequest(end=pb.EndOfStream())


def run_raw(stub, requests, timeout=30):
    """(responses, None) or (responses so far, RpcError)."""
    out = []
    try:
        for r in stub.RenderStream(iter(requests), metadata=META, timeout=timeout):
            out.append(r)
    except grpc.RpcError as e:
        return out, e
    return out, None


def expect_error(stub, requests, code, match):
    _, err = run_raw(stub, requests)
    assert err is not None, "the stream should have failed"
    assert err.code() == code, (err.code(), err.details())
    assert match in err.details(), err.details()
    return err


def test_frames_echo_indices_and_match_the_engine(server, client, ready_avatar, avatar_file):
    from otavatar.coeffs import windows
    from otavatar.runtime import AvatarLatent

    rows = coeff_rows(3)
    got = list(client.stream_frames(ready_avatar, rows, window="causal"))
    assert [f.index for f in got] == [0, 1, 2]
    assert all(f.image.shape == (128, 128, 3) and f.image.dtype == np.uint8 for f in got)
    assert all(f.timings["render_ms"] > 0 and f.timings["batch_size"] >= 1 and f.dropped == 0 for f in got)
    latent = AvatarLatent.load(avatar_file)
    want = server.engine.render_avatar(latent, windows(rows, mode="causal"), np.repeat(latent.camera[None], 3, 0))
    # render_many is bit-identical to render_avatar on CPU; 1 level of slack for a different batch grouping
    assert np.abs(np.stack([f.image for f in got]).astype(int) - want.frames).max() <= 1


def test_centered_window_renders_every_frame_after_the_end_marker(client, ready_avatar):
    frames = list(client.stream_frames(ready_avatar, coeff_rows(2), window="centered"))
    assert [f.index for f in frames] == [0, 1]


def test_encodings_and_output_size(client, ready_avatar):
    rows = coeff_rows(1)
    raw = next(client.stream(ready_avatar, rows, "RAW_RGB8", window="causal"))
    rgba = next(client.stream(ready_avatar, rows, "RAW_RGBA8", window="causal"))
    png = next(client.stream(ready_avatar, rows, "PNG", window="causal"))
    jpeg = next(client.stream(ready_avatar, rows, "JPEG", window="causal"))
    small = next(client.stream(ready_avatar, rows, window="causal", size=64))
    assert rgba.shape == (128, 128, 4) and (rgba[..., 3] == 255).all() and (rgba[..., :3] == raw).all()
    assert (png == raw).all()
    assert jpeg.shape == raw.shape and np.abs(jpeg.astype(int) - raw).mean() < 8
    assert small.shape == (64, 64, 3)


def test_camera_modes(client, ready_avatar):
    from otavatar.camera import look_at_camera

    side = look_at_camera(0.4, 0.0)
    rows = coeff_rows(1)
    portrait = next(client.stream(ready_avatar, rows, window="causal"))
    turned = next(client.stream(ready_avatar, [(rows[0], side)], window="causal", camera="per_frame"))
    driver = next(client.stream(ready_avatar, rows, window="causal", camera="driver"))
    assert np.abs(turned.astype(int) - portrait).mean() > 0.5      # another viewpoint, another image
    assert driver.shape == portrait.shape


@pytest.mark.parametrize("count", [0, 69, 71, 10**6])
def test_b3_wrong_coefficient_count(stub, ready_avatar, count):
    expect_error(stub, [header(ready_avatar), frame(0), frame(1, np.zeros(count, np.float32))],
                 grpc.StatusCode.INVALID_ARGUMENT, f"frame 1: expected 70 coefficients, got {count}")


@pytest.mark.parametrize("value, match", [(np.nan, "coefficient 5 is nan"), (np.inf, "coefficient 5 is inf"),
                                          (-np.inf, "coefficient 5 is -inf"),
                                          (1e38, "coefficient 5 = 1e+38 is outside")])
def test_b4_non_finite_and_out_of_range(stub, ready_avatar, value, match):
    bad = np.zeros(70, np.float32)
    bad[5] = value
    expect_error(stub, [header(ready_avatar), frame(7, bad)], grpc.StatusCode.INVALID_ARGUMENT, f"frame 7: {match}")


def test_b4_denormals_render_finite_frames(client, ready_avatar):
    rows = np.full((1, 70), 1e-40, np.float32)
    image = next(client.stream(ready_avatar, rows, window="causal"))
    assert image.dtype == np.uint8 and image.shape == (128, 128, 3)


@pytest.mark.parametrize("case", ["frame_first", "end_first", "two_headers", "after_end", "empty", "index_repeat"])
def test_b5_header_first_violations(stub, ready_avatar, case):
    h = header(ready_avatar)
    requests, match = {
        "frame_first": ([frame(0), h], "the first message must be a header, got a frame (index 0)"),
        "end_first": ([END], "the first message must be a header, got end"),
        "two_headers": ([h, frame(0), h], "a second header after 1 frames"),
        "after_end": ([h, frame(0), END, frame(1)], "a frame after the end marker"),
        "empty": ([h, pb.RenderRequest()], "an empty RenderRequest"),
        "index_repeat": ([h, frame(3), frame(3)], "frame 3: frame indices must increase"),
    }[case]
    expect_error(stub, requests, grpc.StatusCode.INVALID_ARGUMENT, match)


def test_b10_unknown_avatar_not_found(stub):
    expect_error(stub, [header("av_" + "0" * 32)], grpc.StatusCode.NOT_FOUND, "not found")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "av_" + "0" * 31 + "\x00", "x" * 5000, ""])
def test_b11_malformed_avatar_id(stub, bad):
    expect_error(stub, [header(bad)], grpc.StatusCode.INVALID_ARGUMENT, "avatar_id")


def test_pending_avatar_is_a_failed_precondition(server, stub):
    record = server.store.create_pending("alice")      # a row with no job: stays PENDING
    try:
        expect_error(stub, [header(record.id)], grpc.StatusCode.FAILED_PRECONDITION, "is PENDING")
    finally:
        server.store.delete("alice", record.id)


def test_bad_camera_and_header_fields(stub, ready_avatar):
    expect_error(stub, [header(ready_avatar, camera_mode=pb.PER_FRAME), frame(0, camera=[0.0] * 24)],
                 grpc.StatusCode.INVALID_ARGUMENT, "frame 0: camera must have 25 values")
    expect_error(stub, [header(ready_avatar, output_size=5000)], grpc.StatusCode.INVALID_ARGUMENT, "output_size")
    expect_error(stub, [header(ready_avatar, queue_depth=99)], grpc.StatusCode.INVALID_ARGUMENT, "queue_depth")


def test_f3_slow_consumer_gets_the_newest_frames_with_bounded_queues(server, client, ready_avatar):
    n = 40

    def paced():                      # 30 fps input
        for row in coeff_rows(n):
            yield row
            time.sleep(1 / 30)

    got = []
    for f in client.stream_frames(ready_avatar, paced(), window="causal", delivery="latest", queue_depth=2):
        got.append(f)
        time.sleep(0.2)               # 5 fps reader
    indices = [f.index for f in got]
    assert indices == sorted(set(indices)) and indices[-1] == n - 1     # in order, and the newest frame arrives
    assert len(got) < n and got[-1].dropped == n - len(got)            # the rest were dropped and counted
    assert server.stats.max_queue_depth <= 2
    wait_idle(server)


def test_f4_deadline_exceeded_then_the_channel_works(server, client, ready_avatar):
    def slow():
        for row in coeff_rows(1000):
            yield row
            time.sleep(0.1)

    with pytest.raises(grpc.RpcError) as err:
        for _ in client.stream(ready_avatar, slow(), window="causal", timeout=1.5):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.RpcError) as err:                        # shorter than one render
        list(client.stream(ready_avatar, coeff_rows(1), window="causal", timeout=0.02))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_idle(server)
    assert len(list(client.stream(ready_avatar, coeff_rows(1), window="causal"))) == 1


def test_f1_cancel_mid_stream_frees_the_stream(server, client, ready_avatar):
    def endless():
        while True:
            yield np.zeros(70, np.float32)
            time.sleep(0.05)

    frames = client.stream_frames(ready_avatar, endless(), window="causal")
    assert next(frames).index == 0
    frames.close()                   # the generator's finally cancels the call
    wait_idle(server)
    assert len(list(client.stream(ready_avatar, coeff_rows(1), window="causal"))) == 1


def test_admission_rejects_at_once_when_full(server, stub, ready_avatar):
    release = threading.Event()

    def held():
        yield header(ready_avatar)
        release.wait(20)
        yield END

    calls = [stub.RenderStream(held(), metadata=META) for _ in range(server.config.max_streams)]
    deadline = time.monotonic() + 10
    while server.stats.streams_active < server.config.max_streams and time.monotonic() < deadline:
        time.sleep(0.02)
    # the held streams are released only after this call returns: a queued call would wait for them and then
    # succeed, so RESOURCE_EXHAUSTED here means "refused at once"
    _, err = run_raw(stub, [header(ready_avatar), END])
    release.set()
    for call in calls:
        assert list(call) == []
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert ("retry-after-ms", "1000") in tuple(err.trailing_metadata())
    wait_idle(server)


def test_idle_stream_is_aborted(server, stub, ready_avatar):
    stop = threading.Event()

    def silent():
        yield header(ready_avatar)
        stop.wait(30)

    try:
        expect_error(stub, silent(), grpc.StatusCode.ABORTED, "idle")
    finally:
        stop.set()
    wait_idle(server)
