"""An open-loop HTTP load generator: requests leave at a fixed rate to every URL whatever
the server does, each on its own connection, and a request's latency runs from the
moment it was due. A server that stalls therefore shows its stall in the latencies
(a closed-loop client would wait with it and send less: coordinated omission)."""
from __future__ import annotations

import http.client
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Result:
    due: float          # time.monotonic() when it was due to leave
    latency: float      # seconds from due to the whole answer read (or the failure)
    failure: str | None  # None, "HTTP 5xx", or the connection error's kind


class Load:
    """GET each of `urls` `rate` times a second, in a background thread, until stopped."""

    def __init__(self, urls: list[str], rate: float = 50, timeout: float = 10, workers: int = 64) -> None:
        self.urls, self.interval, self.timeout = urls, 1 / rate, timeout
        self.results: list[Result] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._thread = threading.Thread(target=self._schedule, daemon=True)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _schedule(self) -> None:
        start, tick = time.monotonic(), 0
        while not self._stop.is_set():
            due = start + tick * self.interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            for url in self.urls:
                self._pool.submit(self._get, url, due)
            tick += 1

    def _get(self, url: str, due: float) -> None:
        parts = urlsplit(url)
        failure = None
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout)
            try:
                conn.request("GET", parts.path or "/")
                answer = conn.getresponse()
                answer.read()
                if answer.status >= 500:
                    failure = f"HTTP {answer.status}"
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            failure = type(exc).__name__
        with self._lock:
            self.results.append(Result(due, time.monotonic() - due, failure))

    def between(self, start: float, end: float) -> list[Result]:
        with self._lock:
            return [r for r in self.results if start <= r.due < end]


@dataclass
class Summary:
    requests: int
    failed: int
    p50: float
    p99: float
    slowest: float
    kinds: dict[str, int]


def summarize(results: list[Result]) -> Summary:
    latencies = sorted(r.latency for r in results) or [0.0]
    kinds: dict[str, int] = {}
    for r in results:
        if r.failure:
            kinds[r.failure] = kinds.get(r.failure, 0) + 1
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else latencies[0]
    return Summary(len(results), sum(kinds.values()), statistics.median(latencies), p99, latencies[-1], kinds)
