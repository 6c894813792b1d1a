"""Soak test of ``captioner serve`` on 127.0.0.1: good and bad uploads mixed, memory watched.

Usage: .venv/bin/python benchmarks/serve_soak.py [--requests 2000] [--concurrency 16] [--rounds 5]

Sends a fixed number of requests, ``--concurrency`` at a time, in ``--rounds`` equal rounds,
mixing by a fixed pattern: good photos (multipart and base64 JSON), text files, truncated JPEGs,
bodies over the size limit (declared, and chunked without a length), pictures over the pixel
limit, broken base64, uploads that stall and then disconnect, and clients that disconnect while
their caption is being made; then a burst of ``--burst`` good requests at once, more than the
queue holds. Reports counts by outcome and status, server errors (5xx other than 503; target
0), 503s (queue full, by design) separately, and the server's resident memory (VmRSS) after
warm-up, after every round and after the burst (target: flat). Writes
benchmarks/results/serve_soak.json. The run is bounded by ``--requests``; each request by the
server's time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from _serve_process import ServerProcess, rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "examples" / "photos").glob("*.jpg"))
MAX_UPLOAD_MB = 1.0
MAX_PIXELS = 4_000_000

# (kind, weight): out of every 100 requests.
MIX = [
    ("good_multipart", 40), ("good_json", 10), ("text_file", 8), ("truncated_jpeg", 8),
    ("oversize_declared", 6), ("oversize_chunked", 4), ("too_many_pixels", 5), ("bad_base64", 5),
    ("stall_then_disconnect", 7), ("disconnect_while_waiting", 7),
]
EXPECTED = {
    "good_multipart": {200}, "good_json": {200}, "text_file": {415}, "truncated_jpeg": {415},
    "oversize_declared": {413}, "oversize_chunked": {413}, "too_many_pixels": {413}, "bad_base64": {400},
}


def payloads() -> dict[str, object]:
    photos = [p.read_bytes() for p in PHOTOS]
    big = io.BytesIO()
    Image.new("RGB", (2500, 2000), (90, 140, 200)).save(big, format="PNG")  # 5 MP in a few kB
    return {
        "photos": photos,
        "text": b"This is a plain text file with an image name.\n" * 40,
        "truncated": photos[0][: len(photos[0]) // 3],
        "oversize": b"\xff\xd8\xff" + bytes(int(MAX_UPLOAD_MB * 1024 * 1024 * 1.5)),
        "too_many_pixels": big.getvalue(),
    }


async def raw_post(port: int, body: bytes, declared: int, pause_s: float, read_reply: bool) -> str:
    """A hand-made HTTP client: sends ``body`` (maybe less than ``declared``), waits, hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write((f"POST /caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                      f"Content-Length: {declared}\r\n\r\n").encode() + body)
        await writer.drain()
        if read_reply:
            line = await asyncio.wait_for(reader.readline(), pause_s)
            return f"answered {line.split()[1].decode()}" if line else "closed by server"
        await asyncio.sleep(pause_s)
        return "client hung up"
    except asyncio.TimeoutError:
        return "client hung up"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def one_request(kind: str, index: int, client: httpx.AsyncClient, url: str, port: int,
                      data: dict, rng: random.Random) -> tuple[str, str]:
    photos = data["photos"]
    photo = photos[index % len(photos)]
    try:
        if kind == "good_multipart":
            response = await client.post(f"{url}/caption", files={"image": ("photo.jpg", photo, "image/jpeg")})
        elif kind == "good_json":
            response = await client.post(f"{url}/caption", json={"image": base64.b64encode(photo).decode()},
                                         params={"beam_size": 1})
        elif kind == "text_file":
            response = await client.post(f"{url}/caption", files={"image": ("notes.jpg", data["text"], "image/jpeg")})
        elif kind == "truncated_jpeg":
            response = await client.post(f"{url}/caption", content=data["truncated"],
                                         headers={"Content-Type": "image/jpeg"})
        elif kind == "oversize_declared":
            response = await client.post(f"{url}/caption", content=data["oversize"],
                                         headers={"Content-Type": "image/jpeg"})
        elif kind == "oversize_chunked":
            async def chunks():
                view = memoryview(data["oversize"])
                for start in range(0, len(view), 64 * 1024):
                    yield bytes(view[start:start + 64 * 1024])
            response = await client.post(f"{url}/caption", content=chunks(), headers={"Content-Type": "image/jpeg"})
        elif kind == "too_many_pixels":
            response = await client.post(f"{url}/caption",
                                         files={"image": ("big.png", data["too_many_pixels"], "image/png")})
        elif kind == "bad_base64":
            response = await client.post(f"{url}/caption", json={"image": "###not base64###"})
        elif kind == "stall_then_disconnect":
            return kind, await raw_post(port, photo[:2000], len(photo), rng.uniform(0.2, 2.0), read_reply=False)
        elif kind == "disconnect_while_waiting":
            return kind, await raw_post(port, photo, len(photo), rng.uniform(0.0, 0.3), read_reply=True)
        else:
            raise ValueError(kind)
    except httpx.HTTPError as error:
        # e.g. the server answered 413 and closed while a large body was still being sent.
        return kind, f"transport {type(error).__name__}"
    return kind, str(response.status_code)


async def soak(server: ServerProcess, requests: int, concurrency: int, rounds: int, seed: int,
               burst_size: int) -> dict:
    data = payloads()
    rng = random.Random(seed)
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    plan = [kinds[(i * 37) % len(kinds)] for i in range(requests)]  # fixed, well spread pattern
    outcomes: Counter = Counter()
    by_kind: dict[str, Counter] = {kind: Counter() for kind, _ in MIX}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    memory = []
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        # Warm-up with good photos at both beam sizes the soak uses, so that the first memory
        # figure is the start of the steady state rather than of the allocator's growth.
        for kind in ("good_multipart", "good_json", "good_multipart", "good_json"):
            await asyncio.gather(*(one_request(kind, i, client, server.url, server.port, data, rng)
                                   for i in range(concurrency)))
        memory.append({"after": "warm-up", "requests": 0, "rss_mb": round(rss_mb(server.pid), 1)})
        semaphore = asyncio.Semaphore(concurrency)

        async def limited(kind: str, index: int) -> tuple[str, str]:
            async with semaphore:
                return await one_request(kind, index, client, server.url, server.port, data, rng)

        per_round = -(-requests // rounds)
        started = time.monotonic()
        done = 0
        for start in range(0, requests, per_round):
            batch = plan[start:start + per_round]
            for kind, outcome in await asyncio.gather(*(limited(k, start + i) for i, k in enumerate(batch))):
                outcomes[outcome] += 1
                by_kind[kind][outcome] += 1
            done += len(batch)
            memory.append({"after": f"round {len(memory)}", "requests": done,
                           "rss_mb": round(rss_mb(server.pid), 1), "elapsed_s": round(time.monotonic() - started, 1)})
            print(f"  {done}/{requests} requests, server RSS {memory[-1]['rss_mb']} MB", flush=True)
        elapsed = time.monotonic() - started
    # Overload: more good requests at once than the queue holds; the excess must get 503 at once
    # (not time out, not crash), the rest their captions.
    burst: Counter = Counter()
    if burst_size:
        burst_limits = httpx.Limits(max_connections=burst_size, max_keepalive_connections=burst_size)
        async with httpx.AsyncClient(limits=burst_limits, timeout=60) as client:
            for _, outcome in await asyncio.gather(*(one_request("good_multipart", i, client, server.url, server.port,
                                                                 data, rng) for i in range(burst_size))):
                burst[outcome] += 1
        memory.append({"after": "burst", "requests": requests + burst_size, "rss_mb": round(rss_mb(server.pid), 1)})
        print(f"  burst of {burst_size}: {dict(burst)}, server RSS {memory[-1]['rss_mb']} MB", flush=True)

    def status(outcome: str) -> int | None:
        # "413" from httpx, "answered 413" from the hand-made clients; None for hang-ups.
        last = outcome.split()[-1]
        return int(last) if last.isdigit() else None

    every = outcomes + burst
    server_errors = sum(n for o, n in every.items() if (status(o) or 0) >= 500 and status(o) != 503)
    unexpected = {kind: {o: n for o, n in counts.items()
                         if kind in EXPECTED and status(o) is not None and status(o) not in EXPECTED[kind] | {503}}
                  for kind, counts in by_kind.items()}
    return {
        "requests": requests,
        "concurrency": concurrency,
        "elapsed_s": round(elapsed, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "by_kind": {kind: dict(sorted(counts.items())) for kind, counts in by_kind.items()},
        "server_errors_5xx_not_503": server_errors,
        "queue_full_503": sum(n for o, n in every.items() if status(o) == 503),
        "unexpected_statuses": {k: v for k, v in unexpected.items() if v},
        "burst": {"requests": burst_size, "outcomes": dict(sorted(burst.items()))},
        "memory": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--burst", type=int, default=64, help="good requests sent at once at the end (meets 503)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_soak.json"))
    args = parser.parse_args()
    machine = describe_machine()
    print(machine)
    server_args = ["--threads", str(args.threads), "--max-upload-mb", str(MAX_UPLOAD_MB),
                   "--max-pixels", str(MAX_PIXELS), "--max-queue", str(args.max_queue), "--max-batch", "8",
                   "--request-timeout", "20"]
    if args.checkpoint:
        server_args += ["--checkpoint", args.checkpoint]
    log = Path(args.out).with_suffix(".server.log")
    with ServerProcess(server_args, log_path=log) as server:
        result = asyncio.run(soak(server, args.requests, args.concurrency, args.rounds, args.seed, args.burst))
        result["server_alive_at_end"] = server.alive() and server.health()["status"] == "ok"
        result["server_batches"] = server.health()["batches"]
    rss = [m["rss_mb"] for m in result["memory"]]
    result["rss_mb_start_end_max"] = [rss[0], rss[-1], max(rss)]
    report = {"machine": machine, "command": " ".join(sys.argv), "server_args": server_args, **result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    summary = ("outcomes", "server_errors_5xx_not_503", "queue_full_503", "unexpected_statuses", "burst",
               "rss_mb_start_end_max", "server_alive_at_end")
    print(json.dumps({key: report[key] for key in summary}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
