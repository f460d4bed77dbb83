"""Serving throughput and latency: requests/s and p50/p99 for 1, 4 and 16 concurrent clients.

    python benchmarks/serve.py [--checkpoint CKPT] [--engine auto] [--image PNG] [--requests 48] [--json FILE]

Starts `segnet serve`'s app (the shipped camvid_segnet_basic by default) on a free localhost
port in this process, then each level of concurrency sends --requests POST /segment requests
(JSON answers, a 360x480 CamVid test frame by default) from that many client threads.
Reports requests/s, client-side p50/p99 latency, and the mean batch size the server formed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_serve import Server, post_image  # noqa: E402  (the tests' server harness and client)

from segnet.engine import load_model  # noqa: E402
from segnet.engine.precision import cpu_description  # noqa: E402
from segnet.serve import create_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--image", default="../shared/data/CamVid/test/0001TP_008550.png")
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-batch", type=int, help="default: segnet serve's (8; 1 for the nnpack engine)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--engine", default="auto", help="the engine serve runs (segnet serve --engine)")
    parser.add_argument("--json")
    args = parser.parse_args()

    loaded = load_model(args.checkpoint or "camvid_segnet_basic")
    loaded.engine = args.engine  # serve prepares it, as `segnet serve --engine` does
    source = loaded.source
    app = create_app(loaded, Path(source).stem, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=64)
    data = Path(args.image).read_bytes()
    rows = []
    with Server(app) as server:
        post_image(server.url, data)  # warm-up
        for clients in args.clients:
            latencies, batches, timings = [], [], []

            def one(_):
                start = time.perf_counter()
                status, _, body = post_image(server.url, data)
                latencies.append(time.perf_counter() - start)
                if status == 200:
                    timing = json.loads(body)["timing"]
                    batches.append(timing["batch_size"])
                    timings.append(timing)
                return status

            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                statuses = list(pool.map(one, range(args.requests)))
            seconds = time.perf_counter() - start
            ordered = sorted(latencies)
            row = {"clients": clients, "requests": args.requests, "ok": statuses.count(200),
                   "requests_per_s": args.requests / seconds, "p50_ms": statistics.median(ordered) * 1000,
                   "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
                   "mean_batch": statistics.mean(batches) if batches else None,
                   "server_ms": {key: statistics.mean(t[key] for t in timings) for key in timings[0]
                                 if key.endswith("_ms")} if timings else None}
            rows.append(row)
            print(f"{clients:2d} clients: {row['requests_per_s']:.2f} req/s, p50 {row['p50_ms']:.0f} ms, "
                  f"p99 {row['p99_ms']:.0f} ms, mean batch {row['mean_batch']:.2f}, {row['ok']}/{args.requests} ok; "
                  "server mean " + ", ".join(f"{k} {v:.0f}" for k, v in (row["server_ms"] or {}).items()))
    cpu = cpu_description()
    result = {"device": f"{cpu['model']} ({' '.join(cpu['flags'])})", "model": str(source), "image": args.image,
              "runtime": loaded.runtime, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
