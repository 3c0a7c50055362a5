"""Latency records as stored with a run's results (torch-free: the console reads them).

``bench.after_run`` (lowrank.deploy.after_run) writes these keys into status.json's summary and the
results.csv row: ``latency_ms_b1`` (ms per batch-1 eval forward), ``throughput`` (images/s at
``throughput_batch``), ``latency_device`` (``cpu: <model name>`` / ``cuda: <GPU name>``),
``latency_threads`` (torch's intra-op threads), ``latency_torch`` (its version), and the whole
measurement under ``latency``. A latency is comparable only with latencies of the same
:func:`device_key`: readers group or refuse by it, never mix.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

SUMMARY_KEYS = ("latency_ms_b1", "throughput", "throughput_batch", "latency_device", "latency_threads",
                "latency_torch")


def device_key(record: Mapping[str, Any]) -> str | None:
    """What a latency was measured on: ``cpu: <model> x<threads> threads`` or ``cuda: <GPU>``; None
    for a record (status.json, a results.csv row) without a latency."""
    name = record.get("latency_device")
    if record.get("latency_ms_b1") in (None, "") or not name:
        return None
    threads = record.get("latency_threads")
    if str(name).startswith("cpu") and threads not in (None, ""):
        return f"{name} x{threads} threads"
    return str(name)


def device_keys(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many records carry each device key (records without a latency left out)."""
    counts: dict[str, int] = {}
    for record in records:
        key = device_key(record)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return counts


def pick_device(records: Iterable[Mapping[str, Any]], wanted: str | None = None) -> tuple[str | None, str | None]:
    """(the one device key the records' latencies share, None) or (None, the reason they cannot go on
    one axis). ``wanted`` (a part of a key, or a whole one) picks among several."""
    return pick_key(device_keys(records), wanted)


def pick_key(counts: Mapping[str, int], wanted: str | None = None) -> tuple[str | None, str | None]:
    """:func:`pick_device` on counts already made (device key -> how many records carry it), e.g.
    summed over a sweep's groups."""
    if not counts:
        return None, "no run has a measured latency (bench.after_run was off for them)"
    if wanted:
        matching = [key for key in counts if wanted.lower() in key.lower()]
        exact = [key for key in matching if key.lower() == wanted.strip().lower()]
        matching = exact or matching  # a whole key picks it even where it is also part of a longer one
        if len(matching) == 1:
            return matching[0], None
        known = "; ".join(f"{key} ({count} runs)" for key, count in counts.items())
        if not matching:
            return None, f"no latency was measured on a device matching {wanted!r}; measured on: {known}"
        return None, f"{wanted!r} matches {len(matching)} devices: {known}"
    if len(counts) == 1:
        return next(iter(counts)), None
    known = "; ".join(f"{key} ({count} runs)" for key, count in counts.items())
    return None, f"latencies were measured on {len(counts)} devices and are not comparable on one axis: {known}"
