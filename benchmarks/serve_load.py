"""Load test of ``captioner serve`` on 127.0.0.1: throughput and latency, batched vs one at a time.

Usage: .venv/bin/python benchmarks/serve_load.py [--clients 32] [--duration 60] [--checkpoint RUN_DIR]

For each mode (micro-batching on, then ``--max-batch 1``) it starts the server with the shipped
model as a subprocess, warms it up, then runs ``--clients`` concurrent clients (asyncio + httpx,
one request in flight each) for ``--duration`` seconds, each posting the example photos in turn
as multipart uploads (beam 3). Reports requests/s, p50/p90/p99 latency, errors (anything but
200), the server's mean batch size and its memory; writes benchmarks/results/serve_load.json.
The clients run on the same machine and take some of its CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from _serve_process import ServerProcess, rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "examples" / "photos").glob("*.jpg"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def client_loop(client: httpx.AsyncClient, url: str, photos: list[tuple[str, bytes]], offset: int,
                      stop_at: float, beam_size: int, latencies: list[float], errors: list[str]) -> None:
    index = offset
    while time.monotonic() < stop_at:
        name, data = photos[index % len(photos)]
        index += 1
        started = time.monotonic()
        try:
            response = await client.post(f"{url}/caption", params={"beam_size": beam_size},
                                         files={"image": (name, data, "image/jpeg")})
            if response.status_code == 200:
                latencies.append(time.monotonic() - started)
            else:
                errors.append(f"{response.status_code}: {response.text[:100]}")
        except httpx.HTTPError as error:
            errors.append(f"{type(error).__name__}: {error}")


async def run_load(url: str, clients: int, duration: float, beam_size: int) -> dict:
    photos = [(p.name, p.read_bytes()) for p in PHOTOS]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        # Warm-up: every client once, unmeasured (first batches pay for allocator growth).
        await asyncio.gather(*(client_loop(client, url, photos, i, time.monotonic() + 0.001, beam_size, [], [])
                               for i in range(clients)))
        latencies: list[float] = []
        errors: list[str] = []
        started = time.monotonic()
        await asyncio.gather(*(client_loop(client, url, photos, i, started + duration, beam_size, latencies, errors)
                               for i in range(clients)))
        elapsed = time.monotonic() - started
    return {
        "requests_ok": len(latencies),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 1),
            "p90": round(percentile(latencies, 0.90) * 1000, 1),
            "p99": round(percentile(latencies, 0.99) * 1000, 1),
            "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per mode")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-window-ms", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_load.json"))
    args = parser.parse_args()
    machine = describe_machine()
    print(machine)
    modes = {"batched": args.max_batch, "one at a time": 1}
    report: dict = {"machine": machine, "command": " ".join(sys.argv), "clients": args.clients,
                    "duration_s": args.duration, "beam_size": args.beam_size, "photos": [p.name for p in PHOTOS],
                    "modes": {}}
    for mode, max_batch in modes.items():
        server_args = ["--threads", str(args.threads), "--max-batch", str(max_batch),
                       "--batch-window-ms", str(args.batch_window_ms),
                       "--max-queue", str(max(64, 2 * args.clients)), "--request-timeout", "120"]
        if args.checkpoint:
            server_args += ["--checkpoint", args.checkpoint]
        log = Path(args.out).with_suffix(f".{mode.replace(' ', '_')}.server.log")
        with ServerProcess(server_args, log_path=log) as server:
            result = asyncio.run(run_load(server.url, args.clients, args.duration, args.beam_size))
            batches = server.health()["batches"]
            result["mean_batch"] = round(batches["mean_batch"], 2)
            result["largest_batch"] = batches["largest_batch"]
            result["server_rss_mb"] = round(rss_mb(server.pid), 1)
            result["max_batch"] = max_batch
        report["modes"][mode] = result
        print(f"{mode:>14}: {result['requests_per_s']:6.2f} req/s  p50 {result['latency_ms']['p50']:7.1f} ms  "
              f"p99 {result['latency_ms']['p99']:7.1f} ms  errors {result['errors']}  "
              f"mean batch {result['mean_batch']}  ({result['requests_ok']} in {result['elapsed_s']} s)")
    batched, single = report["modes"]["batched"], report["modes"]["one at a time"]
    if single["requests_per_s"]:
        report["batching_speedup"] = round(batched["requests_per_s"] / single["requests_per_s"], 2)
    print(f"batching speed-up (requests/s): {report.get('batching_speedup')}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
