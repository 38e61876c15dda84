"""Reading a Prometheus exposition in tests: scrape an endpoint, look samples up by name and labels."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Sample

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass(frozen=True)
class Scrape:
    """The samples of one scrape."""

    samples: list[Sample]

    @classmethod
    def parse(cls, text: str, *, openmetrics: bool = False) -> Scrape:
        """Parse an exposition in the text format (0.0.4) or OpenMetrics."""
        parser = parse_openmetrics if openmetrics else parse_text
        return cls([sample for family in parser(text) for sample in family.samples])

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``; 0 when there is none."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def label_values(self, name: str, label: str, *, counted: bool = False) -> set[str]:
        """Every value ``label`` takes on the samples called ``name`` (with ``counted``, on those not at 0:
        counters whose label values are known are exported at 0 from the start)."""
        return {
            sample.labels[label]
            for sample in self.samples
            if sample.name == name and label in sample.labels and (sample.value or not counted)
        }

    def exemplar_trace_ids(self, name: str, **labels: str) -> set[str]:
        """The trace ids of the exemplars on the samples called ``name`` (OpenMetrics scrapes only)."""
        return {
            sample.exemplar.labels["trace_id"]
            for sample in self.samples
            if sample.name == name
            and sample.exemplar is not None
            and all(sample.labels.get(k) == v for k, v in labels.items())
        }


def scrape(url: str, *, openmetrics: bool = False) -> Scrape:
    """GET ``url`` (asking for OpenMetrics, or not) and parse the answer."""
    headers = {"Accept": OPENMETRICS} if openmetrics else {}
    response = httpx.get(url, headers=headers, timeout=10)
    response.raise_for_status()
    return Scrape.parse(response.text, openmetrics=openmetrics)


def wait_for_scrape(
    url: str,
    until: Callable[[Scrape], bool],
    *,
    timeout: float = 60.0,
    description: str = "",
    openmetrics: bool = False,
) -> Scrape:
    """Scrape ``url`` until ``until`` holds, polling with a deadline; fail with the last scrape's samples."""
    deadline = time.monotonic() + timeout
    last: Scrape | None = None
    while time.monotonic() < deadline:
        try:
            last = scrape(url, openmetrics=openmetrics)
        except httpx.HTTPError:
            last = None
        if last is not None and until(last):
            return last
        time.sleep(0.1)
    shown = (
        []
        if last is None
        else [(s.name, s.labels, s.value) for s in last.samples if not s.name.endswith("_bucket")]
    )
    raise AssertionError(f"{description or url}: not seen in {timeout}s; last scrape: {shown}")


Expected = tuple[float, str, dict[str, str]]


def wait_for_values(url: str, *expected: Expected, timeout: float = 60.0, description: str = "") -> Scrape:
    """Scrape until every ``(number, name, labels)`` sample reaches its number, then check each exactly.

    Each prefork child writes its snapshot about once a second, each at its own time: a test waits for
    every number it checks, then checks them exactly (more would mean something was counted twice).
    """

    def reached(scraped: Scrape) -> bool:
        return all(scraped.value(name, **labels) >= number for number, name, labels in expected)

    scraped = wait_for_scrape(url, reached, timeout=timeout, description=description)
    for number, name, labels in expected:
        assert number == scraped.value(name, **labels), (name, labels, scraped.value(name, **labels))
    return scraped
