"""Prometheus metrics of the gateway, in the text exposition format (no client library needed)."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

Labels = tuple[tuple[str, str], ...]
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels)
    return "{" + ",".join(escaped) + "}"


class Metrics:
    """Counters and histograms, thread-safe; :meth:`render` gives the /metrics page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)

    def counter(self, name: str, help_text: str) -> None:
        self._help[name] = ("counter", help_text)

    def histogram(self, name: str, help_text: str) -> None:
        self._help[name] = ("histogram", help_text)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters[name][key] = self._counters[name].get(key, 0.0) + value

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            # per bucket counts, then the sum and the count
            row = self._histograms[name].setdefault(key, [0.0] * (len(_BUCKETS) + 3))
            row[bisect.bisect_left(_BUCKETS, value)] += 1
            row[-2] += value
            row[-1] += 1

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in sorted(self._help.items()):
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                if kind == "counter":
                    for labels, value in sorted(self._counters.get(name, {}).items()):
                        lines.append(f"{name}{_labels(labels)} {value:g}")
                    continue
                for labels, row in sorted(self._histograms.get(name, {}).items()):
                    cumulative = 0.0
                    for bound, count in zip([*map(str, _BUCKETS), "+Inf"], row[: len(_BUCKETS) + 1]):
                        cumulative += count
                        lines.append(f"{name}_bucket{_labels((*labels, ('le', bound)))} {cumulative:g}")
                    lines.append(f"{name}_sum{_labels(labels)} {row[-2]:g}")
                    lines.append(f"{name}_count{_labels(labels)} {row[-1]:g}")
        return "\n".join(lines) + "\n"
