"""``pipekit demo``: a real pipeline over synthetic web-server access logs.

The source generates Apache-style log lines (seeded, so runs are reproducible, with a
small share of malformed lines); stages parse them, drop what does not parse, enrich
each request in worker threads (a blocking lookup, as a database call would be) and
aggregate status classes, top paths, error rates per region and latency percentiles.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import pipeline as pk

__all__ = ["AccessStats", "build_pipeline", "generate_lines", "parse_line"]

PATHS = [
    "/",
    "/index.html",
    "/login",
    "/logout",
    "/api/users",
    "/api/orders",
    "/api/orders/{id}",
    "/api/search",
    "/static/app.js",
    "/static/app.css",
    "/images/logo.png",
    "/checkout",
    "/cart",
    "/health",
    "/admin",
    "/api/payments",
]
METHODS = ["GET"] * 8 + ["POST"] * 3 + ["PUT", "DELETE"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0) Chrome/131.0",
    "Mozilla/5.0 (Macintosh) Safari/605.1",
    "curl/8.5.0",
    "python-requests/2.32",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
]
REGIONS = {0: "eu-west", 1: "eu-central", 2: "us-east", 3: "us-west", 4: "ap-south", 5: "sa-east"}

LINE = re.compile(
    r"(?P<ip>\d{1,3}(?:\.\d{1,3}){3}) - - \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.[01]" (?P<status>\d{3}) (?P<size>\d+) '
    r'"(?P<agent>[^"]*)" (?P<latency>\d+(?:\.\d+)?)ms$'
)


def generate_lines(count: int, seed: int = 7) -> Iterator[str]:
    """``count`` access-log lines; about 0.5% are deliberately malformed."""
    rng = random.Random(seed)
    for i in range(count):
        if rng.random() < 0.005:
            yield f"garbage line {i} \x00 ???"
            continue
        octets = (
            rng.randint(1, 223),
            rng.randint(0, 255),
            rng.randint(0, 255),
            rng.randint(1, 254),
        )
        ip = ".".join(map(str, octets))
        path = rng.choice(PATHS).replace("{id}", str(rng.randint(1, 99999)))
        roll = rng.random()
        status = (
            200
            if roll < 0.82
            else 304
            if roll < 0.88
            else 404
            if roll < 0.95
            else 500
            if roll < 0.985
            else 503
        )
        if path == "/admin" and rng.random() < 0.6:
            status = 403
        latency = rng.lognormvariate(3.0, 0.8) * (4 if status >= 500 else 1)
        size = 0 if status == 304 else rng.randint(200, 50_000)
        second = i // 50
        hh, mm, ss = (second // 3600) % 24, (second // 60) % 60, second % 60
        stamp = f"21/Nov/2026:{hh:02d}:{mm:02d}:{ss:02d} +0000"
        yield (
            f'{ip} - - [{stamp}] "{rng.choice(METHODS)} {path} HTTP/1.1" {status} {size} '
            f'"{rng.choice(AGENTS)}" {latency:.1f}ms'
        )


def parse_line(line: str) -> dict[str, Any] | None:
    """A dict per well-formed line, None for a malformed one."""
    m = LINE.match(line)
    if m is None:
        return None
    return {
        "ip": m["ip"],
        "method": m["method"],
        "path": m["path"],
        "status": int(m["status"]),
        "size": int(m["size"]),
        "agent": m["agent"],
        "latency_ms": float(m["latency"]),
    }


def is_record(record: dict[str, Any] | None) -> bool:
    return record is not None


def enrich(record: dict[str, Any]) -> dict[str, Any]:
    """Blocking enrichment (stands in for a database or GeoIP lookup)."""
    first_octet = int(record["ip"].split(".", 1)[0])
    record["region"] = REGIONS[first_octet % len(REGIONS)]
    agent = record["agent"]
    record["client"] = (
        "bot"
        if "bot" in agent.lower()
        else "script"
        if "/" in agent.split(" ")[0] and "Mozilla" not in agent
        else "browser"
    )
    record["route"] = re.sub(r"/\d+$", "/{id}", record["path"])
    return record


@dataclass
class AccessStats:
    """The aggregate the demo's sink builds."""

    requests: int = 0
    bytes: int = 0
    status_classes: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    route_errors: Counter[str] = field(default_factory=Counter)
    region_requests: Counter[str] = field(default_factory=Counter)
    region_errors: Counter[str] = field(default_factory=Counter)
    clients: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        self.requests += 1
        self.bytes += record["size"]
        status = record["status"]
        self.status_classes[f"{status // 100}xx"] += 1
        self.routes[record["route"]] += 1
        self.region_requests[record["region"]] += 1
        self.clients[record["client"]] += 1
        if status >= 500:
            self.route_errors[record["route"]] += 1
            self.region_errors[record["region"]] += 1
        self.latencies.append(record["latency_ms"])

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def report(self) -> str:
        out = [
            f"requests parsed: {self.requests:,}   bytes served: {self.bytes / 1e6:,.1f} MB",
            "status classes: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(self.status_classes.items())),
            "clients: " + ", ".join(f"{k} {v:,}" for k, v in self.clients.most_common()),
            f"latency ms: p50 {self.percentile(0.50):.1f}  p95 {self.percentile(0.95):.1f}  "
            f"p99 {self.percentile(0.99):.1f}",
            "top routes: " + ", ".join(f"{k} {v:,}" for k, v in self.routes.most_common(5)),
            "5xx by route: " + ", ".join(f"{k} {v:,}" for k, v in self.route_errors.most_common(5)),
            "5xx rate by region: "
            + ", ".join(
                f"{r} {100 * self.region_errors[r] / n:.2f}%"
                for r, n in sorted(self.region_requests.items())
            ),
        ]
        return "\n".join(out)


def build_pipeline(
    lines: int = 200_000, seed: int = 7, workers: int = 2
) -> tuple[pk.Pipeline, AccessStats]:
    """The demo pipeline and the aggregate its sink fills."""
    stats = AccessStats()
    counts: dict[str, int] = defaultdict(int)

    def generate() -> Iterator[str]:
        counts["generated"] = 0
        for line in generate_lines(lines, seed):
            counts["generated"] += 1
            yield line

    pipeline = (
        pk.source(generate)
        | pk.map(parse_line)
        | pk.filter(is_record)
        | pk.thread(enrich, workers=workers)
        | pk.sink(stats.add)
    )
    return pipeline, stats
