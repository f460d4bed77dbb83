"""The web app and HTTP service: a real server on a free localhost port, real requests."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnet.data import SYNTHETIC_META, SyntheticRoadScenes
from segnet.engine.engines import nnpack_available
from segnet.serve import DynamicBatcher, QueueFull

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}


# only a guard against a hung server: a loaded machine (a suite at nice 19 beside busy work)
# can take minutes to answer, and that must not fail a test (issue 34)
CLIENT_TIMEOUT = 600


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """uvicorn in a thread, stopped cleanly by the test."""

    def __init__(self, app) -> None:
        self.app, self.port = app, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        _wait_until(lambda: self.server.started, "the server's start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(CLIENT_TIMEOUT)
        self.app.state.batcher.close()
        assert not self.thread.is_alive(), "the server did not stop"


def _app(tmp_path: Path, **options):
    from segnet.engine.inference import LoadedModel
    from segnet.models import create_model
    from segnet.serve import create_app

    torch.manual_seed(0)
    model = create_model("segnet_basic", SYNTHETIC_META.num_classes).eval()
    example = tmp_path / "example.png"
    Image.fromarray(SyntheticRoadScenes("test", count=1, size=(72, 96)).load(0)[0].permute(1, 2, 0).numpy()).save(
        example)
    loaded = LoadedModel(model, SYNTHETIC_META, RAW, None, "test", "segnet_basic", trained=False)
    return create_app(loaded, example=example, **options)


def _png_bytes(height: int = 48, width: int = 64, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def post_image(url: str, data: bytes, name: str = "photo.png", query: str = "") -> tuple[int, dict, bytes]:
    """POST ``data`` as the multipart field 'image'; (status, headers, body), errors included."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/segment{query}", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=CLIENT_TIMEOUT) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_segment_answers_with_label_map_overlay_shares_and_timings(tmp_path):
    with Server(_app(tmp_path)) as server:
        assert get_json(f"{server.url}/health")["status"] == "ok"
        described = get_json(f"{server.url}/models")["models"][0]
        assert [c["name"] for c in described["classes"]] == list(SYNTHETIC_META.class_names)
        assert "/segment" in get_json(f"{server.url}/openapi.json")["paths"]  # the API is documented
        status, headers, body = post_image(server.url, _png_bytes(48, 64))
        assert status == 200
        answer = json.loads(body)
        assert (answer["width"], answer["height"]) == (64, 48)
        assert sum(c["share"] for c in answer["classes"]) == pytest.approx(1.0)
        labels = np.array(Image.open(io.BytesIO(base64.b64decode(answer["labels_png"]))))
        assert labels.shape == (48, 64) and labels.max() < SYNTHETIC_META.num_classes
        shares = np.bincount(labels.ravel(), minlength=SYNTHETIC_META.num_classes) / labels.size
        assert [c["share"] for c in answer["classes"]] == pytest.approx(shares.tolist())
        assert Image.open(io.BytesIO(base64.b64decode(answer["overlay_png"]))).size == (64, 48)
        assert answer["uncertainty_png"] is None  # not a Bayesian model
        assert {"queue_ms", "inference_ms", "batch_size", "total_ms"} <= set(answer["timing"])
        status, headers, body = post_image(server.url, _png_bytes(48, 64), query="?output=labels")
        assert status == 200 and headers["content-type"] == "image/png" and "x-segnet-inference-ms" in {
            k.lower() for k in headers}
        assert np.array_equal(np.array(Image.open(io.BytesIO(body))), labels)  # same image, same answer


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    """One server with a 0.2 MB upload limit for all the bad uploads (each must leave it serving)."""
    with Server(_app(tmp_path_factory.mktemp("limited"), max_upload_mb=0.2)) as server:
        yield server


@pytest.mark.parametrize("name,data,status,needle", [
    ("notes.txt", b"plain text, not an image\n", 415, "not an image"),
    ("cut.png", _png_bytes()[:120], 400, "truncated"),
    ("tiny.png", _png_bytes(4, 4), 422, "at least 9x9"),
    ("empty.png", b"", 400, "empty"),
    ("big.png", _png_bytes(400, 400), 413, "limit"),
])
def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_serving(limited_server, name, data, status, needle):
    code, _, body = post_image(limited_server.url, data, name=name)
    answer = json.loads(body)
    assert code == status and answer["status"] == status and needle in answer["error"]
    assert post_image(limited_server.url, _png_bytes())[0] == 200  # still serving


def _wait_until(condition, what: str = "the condition") -> None:
    give_up = time.monotonic() + 60  # a guard against a hang, not a speed check
    while not condition():
        assert time.monotonic() < give_up, f"hung: {what} never held"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_burst_of_concurrent_requests_is_batched_and_all_answered(tmp_path):
    with Server(_app(tmp_path, max_batch=8, max_wait_ms=300)) as server:
        images = [_png_bytes(48, 64, seed) for seed in range(12)]
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda data: post_image(server.url, data), images))
        assert [status for status, _, _ in answers] == [200] * 12  # none lost
        timings = [json.loads(body)["timing"] for _, _, body in answers]
        assert max(t["batch_size"] for t in timings) > 1  # batching is visible in the timings
        assert get_json(f"{server.url}/health")["batches_run"] < 12
        # each answer belongs to its own image: the same image alone gives the same labels
        for data, (_, _, body) in list(zip(images, answers))[:3]:
            alone = json.loads(post_image(server.url, data)[2])
            assert alone["labels_png"] == json.loads(body)["labels_png"]


def test_a_full_queue_answers_503_with_retry_after(tmp_path):
    app = _app(tmp_path, max_batch=1, max_wait_ms=0, max_queue=1)
    taken, release = threading.Event(), threading.Event()
    real = app.state.batcher.run_batch

    def slow(images):
        taken.set()
        release.wait(60)
        return real(images)

    app.state.batcher.run_batch = slow
    with Server(app) as server, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post_image, server.url, _png_bytes(seed=1))
        assert taken.wait(60), "the worker never took the first image"  # now held by the worker
        second = pool.submit(post_image, server.url, _png_bytes(seed=2))
        _wait_until(lambda: app.state.batcher.waiting == 1)  # the second waits in the queue
        status, headers, body = post_image(server.url, _png_bytes(seed=3))
        release.set()
        assert status == 503 and headers.get("retry-after", headers.get("Retry-After")) == "1"
        assert "busy" in json.loads(body)["error"]
        assert first.result()[0] == 200 and second.result()[0] == 200


@pytest.mark.parametrize("engine, expected", [
    ("eager", 8),
    pytest.param("nnpack", 1, marks=pytest.mark.skipif(not nnpack_available(),
                                                       reason="this torch build has no NNPACK")),
])
def test_requests_are_paired_unless_the_engine_runs_one_image_at_a_time(engine, expected):
    from segnet.engine.inference import LoadedModel
    from segnet.models import create_model
    from segnet.serve import create_app

    loaded = LoadedModel(create_model("segnet_basic", SYNTHETIC_META.num_classes).eval(), SYNTHETIC_META, RAW, (32, 48),
                         "test", "segnet_basic", trained=False).prepare(engine, amp="off")
    for asked, served in ((None, expected), (3, 3)):  # what the caller asks for wins
        app = create_app(loaded, max_batch=asked, amp="off")
        try:
            assert loaded.runtime["engine"] == engine and app.state.batcher.max_batch == served
        finally:
            app.state.batcher.close()


def test_a_compiled_engine_is_compiled_before_the_first_request(tmp_path, monkeypatch):
    from segnet.engine.inference import LoadedModel
    from segnet.models import create_model
    from segnet.serve import create_app

    loaded = LoadedModel(create_model("segnet_basic", SYNTHETIC_META.num_classes).eval(), SYNTHETIC_META, RAW, (32, 48),
                         "test", "segnet_basic", trained=False)
    loaded.prepare(engine="compile")
    warmed = []
    monkeypatch.setattr(loaded, "segment_batch", lambda images, *rest: warmed.append(
        [tuple(image.shape) for image in images]))
    create_app(loaded, max_batch=8)
    assert warmed == [[(3, 32, 48)], [(3, 32, 48)] * 2]  # one image, then a batch: both graphs before serving
    warmed.clear()
    create_app(loaded, max_batch=1)
    assert warmed == [[(3, 32, 48)]]
    loaded.prepare(engine="eager")
    warmed.clear()
    create_app(loaded)
    assert warmed == []  # nothing to compile: no start-up cost


def test_batcher_groups_by_size_and_refuses_beyond_its_queue():
    calls = []
    gate = threading.Event()

    def run(images):
        gate.wait(10)
        calls.append([tuple(i.shape) for i in images])
        return [int(i.sum()) for i in images]

    # a batch is full at 3 images, and the worker waits up to 10 s to fill one: these 3 are one
    # batch however slowly this thread submits them
    batcher = DynamicBatcher(run, max_batch=3, max_wait_s=10, max_queue=3)
    images = [torch.ones(3, 4, 4), torch.ones(3, 4, 4) * 2, torch.ones(3, 5, 5)]
    futures = [batcher.submit(image) for image in images]
    _wait_until(lambda: batcher.waiting == 0)  # the worker holds the batch; the queue is empty again
    more = [batcher.submit(torch.zeros(3, 4, 4)) for _ in range(3)]
    with pytest.raises(QueueFull):
        batcher.submit(torch.zeros(3, 4, 4))
    gate.set()
    assert [f.result(10)[0] for f in futures] == [48, 96, 75]
    assert sorted(calls[:2]) == [[(3, 4, 4), (3, 4, 4)], [(3, 5, 5)]]  # one forward per size
    assert all(f.result(10)[1]["batch_size"] == 3 for f in more)
    batcher.close()


@pytest.mark.slow
def test_the_page_segments_the_example_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
             f"--user-data-dir={tmp_path / 'profile'}"]
    with Server(_app(tmp_path)) as server:
        page = f"{server.url}/?example"  # the page fetches the example and uploads it, as a chosen file would be
        dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
        shot = tmp_path / "page.png"
        subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,800", page], capture_output=True,
                       timeout=120)
    assert 'data-done="1"' in dom  # the script ran to the end
    assert 'id="overlay" alt="overlay" src="data:image/png;base64,' in dom
    assert dom.count('class="class"') >= 1 and "segnet_basic" in dom
    assert shot.is_file() and Image.open(shot).size == (1200, 800)


def _bomb_png() -> bytes:
    """A 10000x10000 PNG of a few kB: 100 MP that would take gigabytes to decode and segment."""
    buffer = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    data = _bomb_png()
    assert len(data) < 100_000
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))
    with Server(_app(tmp_path)) as server:
        code, _, body = post_image(server.url, data, name="bomb.png")
        assert code == 413 and "10000x10000" in json.loads(body)["error"] and "--max-megapixels" in \
            json.loads(body)["error"]
        assert (10000, 10000) not in decoded  # refused before decoding
        assert post_image(server.url, _png_bytes())[0] == 200
    with Server(_app(tmp_path, max_megapixels=0.001)) as server:  # configurable: 1,000 pixels
        assert post_image(server.url, _png_bytes(48, 64))[0] == 413


def test_a_chunked_upload_is_stopped_at_the_limit_while_it_arrives(tmp_path):
    """No Content-Length: the body is counted as it arrives and refused at the limit, not after."""
    import http.client
    import select

    with Server(_app(tmp_path, max_upload_mb=0.2)) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
        boundary = "b0undary"
        connection.putrequest("POST", "/segment")
        connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        for chunk in [head] + [b"\0" * 65536] * 16:  # 1 MB of a body that never ends, 5 times the limit
            connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        # the answer comes while the body is still open: the server did not wait for its end
        readable, _, _ = select.select([connection.sock], [], [], 20)
        assert readable, "no answer before the body ended: the upload was not stopped at the limit"
        response = connection.getresponse()
        assert response.status == 413 and "limit" in json.loads(response.read())["error"]
        connection.close()
        assert post_image(server.url, _png_bytes())[0] == 200  # still serving
