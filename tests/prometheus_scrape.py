"""A real scrape of a ``/metrics`` endpoint, parsed with prometheus-client's own parser."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Scrape:
    """The samples of one scrape, and the family (metric) names with their types."""

    samples: tuple[Sample, ...]
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The one sample ``name`` with exactly ``labels``; KeyError when there is none."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        if len(found) != 1:
            raise KeyError(f"{name}{labels}: {len(found)} samples in the scrape")
        return found[0]

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """``name``'s samples by the value of their one label ``label``."""
        return {s.labels[label]: s.value for s in self.samples if s.name == name and set(s.labels) == {label}}

    @property
    def names(self) -> set[str]:
        """Every sample name (``_total``, ``_bucket``, ``_count``, ``_sum`` included) and every family name."""
        return {s.name for s in self.samples} | set(self.types)


def parse(text: str) -> Scrape:
    families = list(text_string_to_metric_families(text))
    return Scrape(tuple(s for f in families for s in f.samples), {f.name: f.type for f in families})


def scrape(url: str) -> Scrape:
    """GET ``url`` (the text format) and parse it; fails on anything but a 200."""
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)
