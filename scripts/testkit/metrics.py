"""One scrape of a service's Prometheus endpoint, parsed by prometheus_client's own parser.

A scrape is a dict {sample: value}: the sample's name alone when it has no labels, else its name and labels in
the exposition's form with the label names sorted (`predictor_car_evictions_total{reason="idle"}`). A labelled
sample also adds up under its bare name (`bridge_out_of_range_total` is the sum over every field), except a
histogram's buckets and a summary's quantiles, whose sum means nothing.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

NOT_ADDED_UP = ("le", "quantile")


def sample_key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    inside = ",".join(f'{key}="{labels[key]}"' for key in sorted(labels))
    return f"{name}{{{inside}}}"


class Metrics(dict[str, float]):
    """Samples of one scrape by key (module docstring); `samples` keeps prometheus_client's own, labels and all."""

    def __init__(self, samples: list[Sample] | None = None) -> None:
        super().__init__()
        self.samples = samples or []
        for s in self.samples:
            self[sample_key(s.name, s.labels)] = s.value
            if s.labels and not set(s.labels) & set(NOT_ADDED_UP):
                self[s.name] = self.get(s.name, 0.0) + s.value

    def value(self, name: str, default: float = 0.0, **labels: str) -> float:
        """The sample `name` with exactly these labels (or, without labels, the sum over its labelled samples);
        `default` when the scrape holds none."""
        return self.get(sample_key(name, labels), default)

    def label_values(self, name: str, label: str) -> set[str]:
        """The values `label` takes among the samples called `name`."""
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


def parse(text: str) -> Metrics:
    """The Prometheus text exposition `text` as Metrics."""
    return Metrics([s for family in text_string_to_metric_families(text) for s in family.samples])


def scrape(url: str, timeout: float = 5.0) -> Metrics:
    """GET `url` (`http://host:port/metrics`) and parse it; OSError when nothing answers there."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse(response.read().decode())


def scrape_or_empty(url: str, timeout: float = 5.0) -> Metrics:
    """`scrape`, or no samples at all while nothing answers at `url` yet (a service still starting)."""
    try:
        return scrape(url, timeout)
    except OSError:
        return Metrics()


def read_sample(url: str, name: str, default: float = 0.0, **labels: str) -> float:
    """One sample of one scrape of `url` (Metrics.value)."""
    return scrape(url).value(name, default, **labels)
