"""`chipclear bench --write-docs FILE`: this run's figures, with the machine and the date, in the docs.

A figure without the machine it was measured on and the load it ran under cannot be compared with the
next one, and a hand-copied table drifts from what the bench prints. The bench rewrites only the block
between the two markers below, so the prose around it stays as written.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

BEGIN = "<!-- chipclear bench --write-docs: begin (generated, do not edit) -->"
END = "<!-- chipclear bench --write-docs: end -->"


class NoReportBlock(ValueError):
    """The file has no generated block to rewrite."""


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, CPU, memory, load before the run, Python and the SDK."""
    cpu = platform.processor() or platform.machine()
    memory = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
        with open("/proc/meminfo", encoding="utf-8") as info:
            kib = next((int(line.split()[1]) for line in info if line.startswith("MemTotal:")), 0)
            memory = f"{kib / 1024 / 1024:.0f} GiB" if kib else ""
    except OSError:
        pass  # not Linux: the platform's own words will do
    return {
        "cores": os.cpu_count() or 0,
        "cpu": cpu,
        "memory": memory,
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
    }


def render(report: dict[str, Any], host: dict[str, Any], at: datetime) -> str:
    """The block: when and where, the command's settings, a row per workload, the ratios."""
    load = ", ".join(f"{value:g}" for value in host["load_average"])
    lines = [
        BEGIN,
        f"Last `make bench`: {at.astimezone(UTC):%Y-%m-%d %H:%M} UTC on {host['cores']} cores "
        f"({host['cpu']}{', ' + host['memory'] if host['memory'] else ''}), load average {load} before the "
        f"run; Python {host['python']}, temporalio {host['temporalio']}. "
        f"Concurrency {report['concurrency']}, sandbox {'on' if report['sandbox'] else 'off'}, "
        f"allocation batches {'on' if report['allocation'] else 'off'}, {report['event_store']} event store.",
        "",
        "| workload | workflows | seconds | per second | p50 ms | p99 ms | worker CPU ms | server CPU ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["results"].items():
        server = "-" if row["server_cpu_ms"] is None else row["server_cpu_ms"]
        lines.append(
            f"| {name} | {row['workflows']} | {row['seconds']} | {row['per_second']} | {row['p50_ms']} "
            f"| {row['p99_ms']} | {row['worker_cpu_ms']} | {server} |"
        )
    lines += [
        "",
        f"Ratio to the bare regular-activity workflow: **{report['ratio_vs_regular']}**; to the bare "
        f"local-activity one: {report['ratio_vs_local']}. CPU ms are per workflow: the worker's process "
        "(with the bench's own client) and the dev server's.",
        END,
    ]
    return "\n".join(lines)


def _bounds(path: Path) -> tuple[str, int, int]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NoReportBlock(f"cannot read {path} for the bench to write its figures into ({exc})") from None
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise NoReportBlock(f"{path} has no block for the bench to write: add the lines {BEGIN} and {END}")
    return text, begin, end


def check(path: Path) -> None:
    """Refuse a file the bench could not write into before the run, not after minutes of it."""
    _bounds(path)


def rewrite(path: Path, block: str) -> None:
    """Replace the generated block of `path`, leaving every other line as it is."""
    text, begin, end = _bounds(path)
    path.write_text(text[:begin] + block + text[end + len(END) :], encoding="utf-8")
