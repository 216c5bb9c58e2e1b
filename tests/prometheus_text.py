"""A strict reader of Prometheus' text exposition format (0.0.4), for tests: it raises on any line
the format does not allow, on samples of undeclared families, and on histograms whose buckets are
not cumulative or do not end in +Inf equal to their count."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_SAMPLE = re.compile(rf"^({_NAME})(\{{(?:{_LABEL}(?:,{_LABEL})*)?,?\}})? (\S+)(?: (-?\d+))?$")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


@dataclass
class Family:
    name: str
    kind: str = "untyped"
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, **labels: str) -> float:
        """The one sample of the family itself (no suffix) with exactly these labels."""
        found = [v for n, ls, v in self.samples if n == self.name and ls == labels]
        if len(found) != 1:
            raise KeyError(f"{self.name}{labels}: {len(found)} samples")
        return found[0]

    def total(self, suffix: str = "", **labels: str) -> float:
        """The sum of the samples ``name+suffix`` whose labels include ``labels``."""
        return sum(v for n, ls, v in self.samples if n == self.name + suffix
                   and all(ls.get(k) == w for k, w in labels.items()))


def _value(text: str) -> float:
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    return float(text)


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse(text: str) -> dict[str, Family]:
    if not text.endswith("\n"):
        raise ValueError("the exposition must end with a newline")
    families: dict[str, Family] = {}
    for number, line in enumerate(text.split("\n")[:-1], 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                if not re.fullmatch(_NAME, parts[2]):
                    raise ValueError(f"line {number}: bad metric name {parts[2]!r}")
                family = families.setdefault(parts[2], Family(parts[2]))
                if parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3] not in _TYPES:
                        raise ValueError(f"line {number}: bad TYPE line {line!r}")
                    if family.samples:
                        raise ValueError(f"line {number}: TYPE of {parts[2]} after its samples")
                    family.kind = parts[3]
                else:
                    family.help = parts[3] if len(parts) == 4 else ""
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"line {number}: not a sample line: {line!r}")
        name, labels_text, value_text = match.group(1), match.group(2) or "", match.group(3)
        labels = {k: _unescape(v) for k, v in _LABEL_PAIR.findall(labels_text)}
        owner = next((families[base] for base in (name, re.sub(r"_(bucket|sum|count)$", "", name))
                      if base in families), None)
        if owner is None:
            raise ValueError(f"line {number}: sample {name} of no declared family")
        if name != owner.name and owner.kind not in ("histogram", "summary"):
            raise ValueError(f"line {number}: {name} is not a sample name of {owner.kind} {owner.name}")
        owner.samples.append((name, labels, _value(value_text)))
    for family in families.values():
        if family.kind == "histogram":
            _check_histogram(family)
        if family.kind == "counter" and any(v < 0 for _, _, v in family.samples):
            raise ValueError(f"counter {family.name} is negative")
    return families


def _check_histogram(family: Family) -> None:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for name, labels, value in family.samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        if name.endswith("_bucket"):
            series.setdefault(rest, []).append((_value(labels["le"]), value))
        elif name.endswith("_count"):
            counts[rest] = value
    for key, buckets in series.items():
        bounds = [b for b, _ in buckets]
        if bounds != sorted(bounds) or bounds[-1] != math.inf:
            raise ValueError(f"histogram {family.name}{dict(key)}: buckets out of order or without +Inf")
        values = [v for _, v in buckets]
        if values != sorted(values):
            raise ValueError(f"histogram {family.name}{dict(key)}: buckets are not cumulative")
        if counts.get(key) != values[-1]:
            raise ValueError(f"histogram {family.name}{dict(key)}: +Inf bucket differs from _count")
