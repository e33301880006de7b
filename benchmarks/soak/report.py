"""Turning the soak's samples into the report's figures."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from soak.faults import Fault
from soak.load import Sample


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def in_windows(sample: Sample, faults: Sequence[Fault]) -> bool:
    """Whether the request was in flight at any moment of a fault's window."""
    ended = sample.at_s + sample.latency_s
    return any(start <= ended and sample.at_s <= end for start, end in (f.window() for f in faults))


def requests_figures(samples: Sequence[Sample], faults: Sequence[Fault]) -> dict[str, Any]:
    statuses = Counter(sample.status for sample in samples)
    outside = [sample for sample in samples if not in_windows(sample, faults)]
    bad_outside = [sample for sample in outside if sample.status >= 500]
    refused_outside = [sample for sample in outside if sample.status == 0]
    return {
        "requests": len(samples),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "http_5xx": sum(count for code, count in statuses.items() if code >= 500),
        "http_4xx": sum(count for code, count in statuses.items() if 400 <= code < 500),
        "connection_failures": statuses.get(0, 0),
        "http_5xx_outside_fault_windows": len(bad_outside),
        "connection_failures_outside_fault_windows": len(refused_outside),
        "failures_outside_fault_windows_examples": [
            {"at_s": round(sample.at_s, 2), "op": sample.op, "status": sample.status}
            for sample in (bad_outside + refused_outside)[:20]
        ],
        "http_5xx_per_fault": {
            f"{fault.kind}@{fault.at_s:.0f}s": sum(
                1 for sample in samples if sample.status >= 500 and in_windows(sample, [fault])
            )
            for fault in faults
        },
    }


def per_operation(samples: Sequence[Sample], *, bucket_s: float) -> dict[str, Any]:
    """Throughput (answered requests/s) and p99 latency (ms) per operation, per time bucket."""
    grouped: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples:
        if sample.status:
            grouped[sample.op][int(sample.at_s // bucket_s)].append(sample.latency_s)
    figures: dict[str, Any] = {}
    for op, buckets in sorted(grouped.items()):
        every = [latency for latencies in buckets.values() for latency in latencies]
        figures[op] = {
            "total": len(every),
            "p99_ms": round(_p99(every) * 1000, 1),
            "over_time": [
                {
                    "t_s": round(index * bucket_s),
                    "per_s": round(len(latencies) / bucket_s, 1),
                    "p99_ms": round(_p99(latencies) * 1000, 1),
                }
                for index, latencies in sorted(buckets.items())
            ],
        }
    return figures


def rss_growth(samples: dict[str, list[tuple[float, float]]], *, warmup_s: float) -> dict[str, Any]:
    """Per process kind: mean RSS per process over the first and the last fifth after warm-up."""
    growth: dict[str, Any] = {}
    for kind, points in samples.items():
        after = [value for at, value in points if at >= warmup_s and value > 0]
        if len(after) < 5:
            growth[kind] = None
            continue
        fifth = max(1, len(after) // 5)
        first = sum(after[:fifth]) / fifth
        last = sum(after[-fifth:]) / fifth
        growth[kind] = round((last - first) / first * 100, 1)
    return growth
