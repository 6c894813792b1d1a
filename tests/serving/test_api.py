"""POST /caption, /health, the page and the OpenAPI schema, through FastAPI's test client."""

from __future__ import annotations

import base64
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from captioner.errors import ConfigError
from captioner.serving.app import CaptionSettings, captioner_batch_function, create_app
from captioner.serving.settings import ServerSettings


@pytest.fixture(scope="module")
def client(tiny_captioner):
    app = create_app(tiny_captioner, ServerSettings(max_upload_bytes=50_000, max_pixels=1_000_000, max_beam_size=5))
    with TestClient(app) as test_client:
        yield test_client


def upload(client: TestClient, data: bytes, name: str = "photo.png", mime: str = "image/png", **params):
    return client.post("/caption", files={"image": (name, data, mime)}, params=params)


def test_health_reports_the_model_and_its_limits(client):
    response = client.get("/health")
    assert response.status_code == 200
    values = response.json()
    assert values["status"] == "ok"
    assert values["model"] == "tiny"
    assert values["precision"] == "fp32"
    assert values["limits"]["max_upload_bytes"] == 50_000
    assert values["limits"]["max_beam_size"] == 5


def test_multipart_upload_gets_the_same_caption_as_the_library_with_attention_per_word(
    client, tiny_captioner, make_jpeg
):
    photo = make_jpeg((96, 64))
    response = upload(client, photo, "stripes.jpg", "image/jpeg")
    assert response.status_code == 200, response.text
    values = response.json()
    (expected,) = tiny_captioner.caption([photo], beam_size=3)
    assert values["caption"] == expected.caption
    assert values["score"] == pytest.approx(expected.score, abs=1e-4)
    assert [w["word"] for w in values["words"]] == expected.words
    assert values["caption"] == " ".join(w["word"] for w in values["words"])
    grid_h, grid_w = values["grid"]
    assert (grid_h, grid_w) == tiny_captioner.grid_size
    for word in values["words"]:
        attention = np.array(word["attention"])
        assert attention.shape == (grid_h, grid_w)
        assert attention.sum() == pytest.approx(1.0, abs=1e-3)
    assert values["image_size"] == [96, 64]
    assert values["beam_size"] == 3
    assert values["model"] == "tiny"


def test_base64_json_and_raw_bodies_are_accepted(client, make_png):
    photo = make_png((40, 30))
    encoded = base64.b64encode(photo).decode()
    plain = client.post("/caption", json={"image": encoded})
    data_url = client.post("/caption", json={"image": "data:image/png;base64," + encoded})
    raw = client.post("/caption", content=photo, headers={"Content-Type": "image/png"})
    for response in (plain, data_url, raw):
        assert response.status_code == 200, response.text
        assert response.json()["image_size"] == [40, 30]
    assert plain.json()["caption"] == data_url.json()["caption"] == raw.json()["caption"]


@pytest.mark.parametrize("body, reason", [
    ({"image": "not base64 !!"}, "base64"),
    ({"picture": "AAAA"}, "image"),
    ([1, 2], "image"),
])
def test_malformed_json_bodies_are_400_with_a_reason(client, body, reason):
    response = client.post("/caption", json=body)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_multipart_without_a_file_is_400(client):
    response = client.post("/caption", data={"note": "no picture"}, files={"other": ("", b"", "text/plain")})
    assert response.status_code in (400, 415)
    assert "error" in response.json()
    response = client.post("/caption", data={"note": "no picture"})  # urlencoded: not a supported type
    assert response.status_code == 415


def test_beam_size_is_validated_and_used(client, make_png):
    photo = make_png()
    for bad in (0, 6, -1):
        response = upload(client, photo, beam_size=bad)
        assert response.status_code == 422, bad
        assert "beam_size" in response.json()["error"]
    response = upload(client, photo, beam_size="three")
    assert response.status_code == 422
    response = upload(client, photo, beam_size=1)
    assert response.status_code == 200
    assert response.json()["beam_size"] == 1


def test_an_upload_over_the_size_limit_is_413(client, make_png):
    big = make_png((200, 200), noise=True)  # ~120 kB of noise against a 50 kB limit
    assert len(big) > 50_000
    response = upload(client, big)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_a_body_without_content_length_is_counted_while_it_arrives(client):
    sent = []

    def chunks():
        for _ in range(200):  # 200 x 8 kB: far past the body limit, never declared up front
            sent.append(1)
            yield b"\0" * 8192

    response = client.post("/caption", content=chunks(), headers={"Content-Type": "image/png"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_a_base64_image_over_the_limit_is_413_even_when_the_body_fits(client):
    encoded = base64.b64encode(b"\x89PNG" + b"\0" * 50_000).decode()
    response = client.post("/caption", json={"image": encoded})
    assert response.status_code == 413


def test_too_many_pixels_is_413_before_decoding(client, make_png):
    response = upload(client, make_png((1200, 1000)))  # 1.2 MP against a 1 MP limit; tiny file
    assert response.status_code == 413
    assert "pixels" in response.json()["error"]


def test_not_an_image_is_415(client, make_jpeg):
    text = upload(client, b"hello, I am a text file\n" * 10, "notes.png", "image/png")
    assert text.status_code == 415
    assert "not an image" in text.json()["error"]
    truncated = upload(client, make_jpeg((300, 200))[:600], "cut.jpg", "image/jpeg")
    assert truncated.status_code == 415
    assert "truncated" in truncated.json()["error"].lower()
    empty = upload(client, b"", "empty.png", "image/png")
    assert empty.status_code == 415
    unsupported = client.post("/caption", content=b"x", headers={"Content-Type": "text/plain"})
    assert unsupported.status_code == 415
    assert "Content-Type" in unsupported.json()["error"]


def test_unknown_routes_and_methods_get_json_errors(client):
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.get("/caption").status_code == 405
    assert "error" in client.get("/caption").json()


def test_openapi_documents_the_upload_and_the_limits(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/caption"]["post"]
    assert {"multipart/form-data", "application/json"} <= set(operation["requestBody"]["content"])
    (beam,) = [p for p in operation["parameters"] if p["name"] == "beam_size"]
    assert beam["in"] == "query"
    assert {"413", "415", "503"} <= set(operation["responses"])
    assert "/health" in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_the_page_is_an_accessible_upload_form(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.text
    assert '<html lang="en">' in html
    assert '<label for="photo-input">' in html and 'id="photo-input"' in html and 'type="file"' in html
    assert 'aria-live="polite"' in html and 'role="alert"' in html
    assert 'tabindex="0"' in html  # the drop zone is reachable from the keyboard
    assert "default-src 'self'" in response.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200, asset
    # Offline: everything the page loads comes from this server.
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert links and all(link.startswith("/") for link in links), links
    assert "://" not in client.get("/static/app.js").text


# --- batching, queue limits, timeouts and failures, with a stand-in model call ---------------


class SlowModel:
    """Wraps the real batch call: records batch sizes, can block until released, can fail."""

    def __init__(self, captioner, delay_s: float = 0.0) -> None:
        self.run = captioner_batch_function(captioner)
        self.delay_s = delay_s
        self.sizes: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_next = False

    def __call__(self, images, beam_size):
        self.sizes.append(len(images))
        self.started.set()
        self.release.wait(timeout=30)
        time.sleep(self.delay_s)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("simulated out of memory")
        return self.run(images, beam_size)


def test_requests_that_arrive_together_share_a_forward_pass(tiny_captioner, make_png):
    model = SlowModel(tiny_captioner, delay_s=0.3)
    app = create_app(tiny_captioner, ServerSettings(max_batch=8, batch_window_ms=100), run_batch=model)
    photos = [make_png((32 + i, 32), (20 * i, 100, 200)) for i in range(8)]
    with TestClient(app) as client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda p: upload(client, p), photos))
        stats = client.get("/health").json()["batches"]
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.json()["image_size"] for r in responses] == [[32 + i, 32] for i in range(8)]
    assert sum(model.sizes) == 8
    assert max(model.sizes) > 1, model.sizes
    assert stats["largest_batch"] == max(model.sizes)


def test_batching_can_be_turned_off(tiny_captioner, make_png):
    model = SlowModel(tiny_captioner, delay_s=0.05)
    app = create_app(tiny_captioner, ServerSettings(max_batch=1, batch_window_ms=50), run_batch=model)
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: upload(client, make_png()), range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert model.sizes == [1, 1, 1, 1]


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_full_queue_is_503_and_the_waiting_requests_still_succeed(tiny_captioner, make_png):
    model = SlowModel(tiny_captioner)
    model.release.clear()
    app = create_app(tiny_captioner, ServerSettings(max_batch=1, max_queue=1, batch_window_ms=0), run_batch=model)
    photo = make_png()
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        running = pool.submit(upload, client, photo)
        assert model.started.wait(10)  # the first request is in the model...
        waiting = pool.submit(upload, client, photo)
        wait_until(lambda: app.state.batcher.queue_length == 1)  # ...the second waits for it
        refused = upload(client, photo)
        assert refused.status_code == 503
        assert "busy" in refused.json()["error"]
        model.release.set()
        assert running.result().status_code == 200
        assert waiting.result().status_code == 200
        assert client.get("/health").json()["batches"]["rejected"] == 1


def test_a_failing_forward_pass_fails_only_its_requests(tiny_captioner, make_png):
    model = SlowModel(tiny_captioner)
    model.fail_next = True
    app = create_app(tiny_captioner, ServerSettings(), run_batch=model)
    with TestClient(app) as client:
        failed = upload(client, make_png())
        assert failed.status_code == 500
        assert "captioning failed" in failed.json()["error"]
        assert upload(client, make_png()).status_code == 200
        assert client.get("/health").json()["status"] == "ok"


def test_a_caption_not_ready_in_time_is_504_and_leaves_the_queue(tiny_captioner, make_png):
    model = SlowModel(tiny_captioner)
    model.release.clear()
    app = create_app(tiny_captioner, ServerSettings(max_batch=1, request_timeout_s=1.0, batch_window_ms=0),
                     run_batch=model)
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(upload, client, make_png())
        assert model.started.wait(10)
        late = upload(client, make_png())  # waits behind the stuck pass, past its deadline
        assert late.status_code == 504
        assert "time limit" in late.json()["error"]
        assert stuck.result().status_code == 504
        assert app.state.batcher.queue_length == 0
        model.release.set()
        model.started.clear()
        assert upload(client, make_png()).status_code == 200
        assert model.sizes == [1, 1]  # the request that timed out while queued never reached the model


def test_new_result_fields_flow_through_to_clients(tiny_captioner, make_png):
    run = captioner_batch_function(tiny_captioner)

    class Labelled:
        def __init__(self, result):
            self.result = result
            self.attention = result.attention
            self.error = result.error

        def to_dict(self, include_attention=False):
            return {**self.result.to_dict(include_attention), "labels": [{"label": "tabby", "p": 0.5}]}

    app = create_app(tiny_captioner, run_batch=lambda images, beam: [Labelled(r) for r in run(images, beam)])
    with TestClient(app) as client:
        response = upload(client, make_png())
    assert response.status_code == 200
    assert response.json()["labels"] == [{"label": "tabby", "p": 0.5}]
    assert "source" not in response.json()


def test_guidance_can_be_chosen_per_request_and_batches_keep_settings_apart(tiny_captioner, make_png):
    run = captioner_batch_function(tiny_captioner)
    seen = []

    def model(images, settings):
        seen.append((len(images), settings))
        return run(images, settings)

    app = create_app(tiny_captioner, ServerSettings(max_batch=1, batch_window_ms=0), run_batch=model)
    with TestClient(app) as client:
        assert upload(client, make_png()).status_code == 200
        assert upload(client, make_png(), guidance="false", beam_size=2).status_code == 200
        assert upload(client, make_png(), guidance="true").status_code == 200
        refused = upload(client, make_png(), guidance="maybe")
    assert refused.status_code == 422 and "guidance" in refused.json()["error"]
    assert seen == [(1, CaptionSettings(3, None)), (1, CaptionSettings(2, False)), (1, CaptionSettings(3, True))]


def test_settings_refuse_impossible_limits():
    with pytest.raises(ConfigError, match="max_queue"):
        ServerSettings(max_queue=0)
    with pytest.raises(ConfigError, match="default_beam_size"):
        ServerSettings(default_beam_size=8, max_beam_size=5)
    with pytest.raises(ConfigError, match="request_timeout_s"):
        ServerSettings(request_timeout_s=0)
    with pytest.raises(ConfigError, match="integer"):
        ServerSettings(max_batch=2.5)


def test_the_shipped_model_guides_by_default_and_not_with_guidance_false():
    from captioner.api import Captioner

    photo = (Path(__file__).parents[2] / "examples" / "photos" / "cat_tabby_closeup.jpg").read_bytes()
    app = create_app(Captioner.from_pretrained(device="cpu"))
    with TestClient(app) as client:
        guided = upload(client, photo, name="cat.jpg", mime="image/jpeg").json()
        plain = upload(client, photo, name="cat.jpg", mime="image/jpeg", guidance="false").json()
    assert guided["guided_by"] == "cat" and "cat" in guided["caption"].split()
    assert plain["guided_by"] is None and "cat" not in plain["caption"].split()
    assert plain["labels"] == guided["labels"] and guided["labels"][0]["word"] == "cat"
