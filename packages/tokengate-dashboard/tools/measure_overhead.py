"""What serving the dashboard costs the seed workload, as a ratio measured in one process.

Rounds alternate between the two sides on one coordinator: *plain* (no dashboard) and
*watched* (the dashboard served at its default 1-second refresh, with a client reading the
live feed and decoding every event, as the page does). Each round runs the same waves of the
seed workload (submit, then ``asyncio.gather``); the figures are tokens per second and the
process's CPU time per token (less sensitive than throughput to other jobs on the machine). The feed
client runs in this process, so it competes for the GIL as a real browser would not: the
measured cost is an upper bound.

    .venv/bin/python packages/tokengate-dashboard/tools/measure_overhead.py --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from typing import Any

import httpx

from tokengate.bench._workload import OPERATIONS, calls_for_wave
from tokengate.core import OperationsCoordinator
from tokengate.dashboard import serve_dashboard


async def _waves(sizes: list[int]) -> tuple[int, float]:
    tokens = 0
    elapsed = 0.0
    for size in sizes:
        calls = calls_for_wave(size, OPERATIONS)
        start = time.perf_counter()
        batch = [call.operation.submit(*call.args) for call in calls]
        results = await asyncio.gather(*batch, return_exceptions=True)
        elapsed += time.perf_counter() - start
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise RuntimeError(f"{len(failed)} tokens failed: {failed[0]!r}")
        tokens += size
    return tokens, elapsed


class FeedReader:
    """Reads and decodes the live feed in a thread, like the page does."""

    def __init__(self, url: str) -> None:
        self.events = 0
        self._url = url
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.stream("GET", f"{self._url}api/events", timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    json.loads(line[5:])
                    self.events += 1
                    self._first.set()
                if self._stop.is_set():
                    return

    def start(self) -> FeedReader:
        self._thread.start()
        if not self._first.wait(10):
            raise RuntimeError("the live feed sent nothing within 10 s")
        return self

    def stop(self) -> None:
        self._stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per side")
    parser.add_argument("--sizes", default="2048,4096,8192,16384", help="wave sizes of one round")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    plain: list[float] = []
    watched: list[float] = []
    plain_cpu: list[float] = []
    watched_cpu: list[float] = []
    feed_events = 0
    sampling_cpu = 0.0
    samples = 0
    watched_time = 0.0
    with OperationsCoordinator() as coordinator:
        asyncio.run(_waves([256]))  # warm-up
        for index in range(2 * args.rounds):
            serve = index % 2 == 1
            server = reader = None
            if serve:
                server = serve_dashboard(coordinator, port=0)
                reader = FeedReader(server.url).start()
            cpu_start = time.process_time()
            tokens, elapsed = asyncio.run(_waves(sizes))
            cpu = (time.process_time() - cpu_start) / tokens * 1e6
            rate = tokens / elapsed
            if reader is not None and server is not None:
                feed_events += reader.events
                sampling_cpu += server.app.sampler.cpu_seconds
                samples += server.app.sampler.samples
                watched_time += tokens / rate
                reader.stop()
                server.stop()
                watched.append(rate)
                watched_cpu.append(cpu)
            else:
                plain.append(rate)
                plain_cpu.append(cpu)
            print(
                f"round {index + 1:2d} {'watched' if serve else 'plain  '} {rate:10,.0f} tokens/s"
                f" {cpu:8.1f} us CPU/token"
            )
    pairs = [w / p for p, w in zip(plain, watched, strict=True)]
    result: dict[str, Any] = {
        "plain_median": statistics.median(plain),
        "watched_median": statistics.median(watched),
        "ratio_of_medians": statistics.median(watched) / statistics.median(plain),
        "ratio_per_pair_median": statistics.median(pairs),
        "pairs": pairs,
        "plain_cpu_us_per_token": statistics.median(plain_cpu),
        "watched_cpu_us_per_token": statistics.median(watched_cpu),
        "cpu_ratio": statistics.median(watched_cpu) / statistics.median(plain_cpu),
        "feed_events": feed_events,
        "samples": samples,
        "sampling_cpu_seconds": sampling_cpu,
        "sampling_share": sampling_cpu / watched_time,
        "sizes": sizes,
        "rounds": args.rounds,
    }
    print(
        f"plain {result['plain_median']:,.0f}/s, watched {result['watched_median']:,.0f}/s: "
        f"watched/plain = {result['ratio_of_medians']:.3f} (median of pairs "
        f"{result['ratio_per_pair_median']:.3f}); {feed_events} events read"
    )
    print(
        f"CPU per token (whole process): plain {result['plain_cpu_us_per_token']:.1f} us, "
        f"watched {result['watched_cpu_us_per_token']:.1f} us: "
        f"watched/plain = {result['cpu_ratio']:.3f}"
    )
    print(
        f"sampling: {samples} samples, {sampling_cpu * 1000:.0f} ms of CPU in "
        f"{watched_time:.1f} s watched = {100 * result['sampling_share']:.2f} % of the time"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
