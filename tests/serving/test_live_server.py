"""The service under a real uvicorn on 127.0.0.1: slow and vanishing clients do not hurt others."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from captioner.serving.app import captioner_batch_function, create_app
from captioner.serving.settings import ServerSettings


def raw_request(port: int, body: bytes, declared: int | None = None, content_type: str = "image/png") -> socket.socket:
    """Open a connection and send a POST /caption whose body may be shorter than declared."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    length = len(body) if declared is None else declared
    head = (f"POST /caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()
    sock.sendall(head + body)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                break
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.partition(b"\r\n\r\n")[2] or b"{}")


def test_real_http_caption_and_health(live_server, make_jpeg):
    health = httpx.get(f"{live_server.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    response = httpx.post(f"{live_server.url}/caption", files={"image": ("a.jpg", make_jpeg(), "image/jpeg")},
                          timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["caption"]


def test_a_slow_upload_does_not_block_other_clients(live_server, make_png):
    photo = make_png()
    slow = raw_request(live_server.port, photo[:50], declared=len(photo))  # the rest never comes
    try:
        started = time.monotonic()
        for _ in range(3):
            response = httpx.post(f"{live_server.url}/caption", content=photo,
                                  headers={"Content-Type": "image/png"}, timeout=30)
            assert response.status_code == 200
        assert time.monotonic() - started < 10
    finally:
        slow.close()
    assert httpx.get(f"{live_server.url}/health", timeout=10).status_code == 200


def test_an_upload_that_stalls_past_the_time_limit_is_408(tiny_captioner, serve_in_thread, make_png):
    app = create_app(tiny_captioner, ServerSettings(request_timeout_s=2.0))
    photo = make_png()
    with serve_in_thread(app) as server:
        stalled = raw_request(server.port, photo[:50], declared=len(photo))
        try:
            status, body = read_response(stalled)
        finally:
            stalled.close()
        assert status == 408
        assert "time limit" in body["error"]
        assert httpx.post(f"{server.url}/caption", content=photo, headers={"Content-Type": "image/png"},
                          timeout=30).status_code == 200


def test_a_client_that_disconnects_while_queued_costs_no_model_time(tiny_captioner, serve_in_thread, make_png):
    run = captioner_batch_function(tiny_captioner)
    gate = threading.Event()
    calls: list[int] = []

    def model(images, beam_size):
        calls.append(len(images))
        gate.wait(20)
        return run(images, beam_size)

    app = create_app(tiny_captioner, ServerSettings(max_batch=1, batch_window_ms=0), run_batch=model)
    photo = make_png()
    with serve_in_thread(app) as server:
        batcher = app.state.batcher
        first = raw_request(server.port, photo)
        deadline = time.monotonic() + 10
        while not calls:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        leaving = raw_request(server.port, photo)
        while batcher.queue_length != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        leaving.close()
        while batcher.queue_length != 0:  # noticed without waiting for the model
            assert time.monotonic() < deadline
            time.sleep(0.01)
        gate.set()
        status, body = read_response(first)
        first.close()
        assert status == 200 and body["caption"]
        after = httpx.post(f"{server.url}/caption", content=photo, headers={"Content-Type": "image/png"}, timeout=30)
        assert after.status_code == 200
        assert calls == [1, 1]  # the first request and the last; never the one that left
        assert batcher.stats.dropped == 1


@pytest.mark.parametrize("declared", [10_000_000, None])
def test_oversize_bodies_are_413_on_the_wire(live_server, declared):
    body = b"\0" * 300_000  # the live server allows 200 kB images
    sock = raw_request(live_server.port, body if declared is None else body[:1000], declared=declared)
    try:
        status, values = read_response(sock)
    finally:
        sock.close()
    assert status == 413
    assert "limit" in values["error"]
