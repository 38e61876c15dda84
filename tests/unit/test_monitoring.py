"""monitoring/alerts.yml and monitoring/prometheus.yml, parsed and checked against the metrics the code exports.

No Prometheus runs here, so the rules are checked statically: every metric an expression names is one the
code declares (with its ``_total``/``_bucket``/... suffix) or a recording rule of the file, every label it
matches on is one of that metric's labels, every value it matches ``status``/``outcome`` against is one the
code produces, every alert has a ``for``, a severity and a summary, and the objective's threshold is the
one the workers mark traces with.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import workflows.metrics  # noqa: F401  # declares the RentVine instruments
from tracing.celery_metrics import TASK_STATUSES
from tracing.metrics import MetricSpec, metric_specs
from workflows.metrics import COMPLETION_BUCKETS_S, COMPLETION_OUTCOMES, WEBHOOK_OUTCOMES
from workflows.settings import AppSettings

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "monitoring" / "alerts.yml"
PROMETHEUS = ROOT / "monitoring" / "prometheus.yml"
SEVERITIES = {"info", "warning", "critical"}
# Series Prometheus makes itself for every target.
BUILTIN = {"up": {"job", "instance"}}
# A metric name, then optionally its label matchers: name{label="v", other=~"a|b"}.
_SELECTOR = re.compile(r"\b([a-z_:][a-z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'([a-z_][a-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
# Words that look like metric names in an expression but are PromQL's own.
_PROMQL = {
    "sum", "rate", "increase", "histogram_quantile", "by", "without", "le", "and", "or", "unless",
    "avg", "max", "min", "count", "clamp_min", "on", "ignoring", "group_left", "group_right",
    "m", "s", "h",
}  # fmt: skip


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load(ALERTS)["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _exported() -> dict[str, MetricSpec]:
    """Sample name → its instrument, for every instrument the code declares, and every series the rule
    file records (as an instrument without labels: the objective's ratios sum every label away)."""
    exported = {name: spec for spec in metric_specs() for name in spec.exported_names}
    for rule in _rules():
        if "record" in rule:
            exported[rule["record"]] = MetricSpec(rule["record"], "counter", "recorded")
    return exported


def _selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric name, {label: (operator, value)}) for each metric an expression selects."""
    found = []
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    for match in _SELECTOR.finditer(expr):
        name = match.group(1)
        if name in _PROMQL or re.search(rf"\b{name}\s*\(", without_strings) or re.fullmatch(r"\d+\w*", name):
            continue
        if re.search(rf"by\s*\([^)]*\b{name}\b", without_strings):
            continue
        matchers = {label: (op, value) for label, op, value in _MATCHER.findall(match.group(2) or "")}
        found.append((name, matchers))
    return found


def _rule_id(rule: dict[str, Any]) -> str:
    return str(rule.get("alert") or rule.get("record"))


class TestAlertRules:
    """Each alert of monitoring/alerts.yml watches what the code exports, and is complete."""

    def test_the_issue_alerts_are_there(self) -> None:
        """Task error rate, dead letters, queue wait p95, slow workflow p95, signature rejections."""
        expressions = {_rule_id(rule): rule["expr"] for rule in _rules()}
        assert {
            "TracehookTaskErrorRateHigh",
            "TracehookDeadLetters",
            "TracehookQueueWaitHigh",
            "TracehookWorkflowSlow",
            "TracehookSignatureRejections",
            "TracehookWebhookObjectiveFastBurn",
            "TracehookWebhookObjectiveSlowBurn",
        } <= set(expressions)
        assert "histogram_quantile(0.95" in expressions["TracehookQueueWaitHigh"]
        assert "tracehook_queue_wait_seconds_bucket" in expressions["TracehookQueueWaitHigh"]
        assert "histogram_quantile(0.95" in expressions["TracehookWorkflowSlow"]
        assert 'status="dead_lettered"' in expressions["TracehookDeadLetters"]
        assert 'outcome="rejected_signature"' in expressions["TracehookSignatureRejections"]

    @pytest.mark.parametrize("rule", _alerts(), ids=_rule_id)
    def test_rule_is_complete(self, rule: dict[str, Any]) -> None:
        """An alert name, a ``for`` duration, a known severity and a summary (and a description)."""
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule.get("for")
        assert rule["labels"]["severity"] in SEVERITIES
        assert rule["annotations"]["summary"].strip()
        assert rule["annotations"]["description"].strip()

    @pytest.mark.parametrize("rule", _rules(), ids=_rule_id)
    def test_expression_uses_exported_metrics(self, rule: dict[str, Any]) -> None:
        """Every metric named is exported by the code (or is Prometheus's ``up``), with labels it has."""
        exported = _exported()
        selected = _selectors(rule["expr"])
        assert selected, f"{_rule_id(rule)} names no metric"
        for name, matchers in selected:
            if name in BUILTIN:
                assert set(matchers) <= BUILTIN[name]
                continue
            assert name in exported, f"{_rule_id(rule)}: {name} is not a metric the code exports"
            labels = set(exported[name].labels) | ({"le"} if name.endswith("_bucket") else set())
            assert set(matchers) <= labels, f"{_rule_id(rule)}: {name} has no label {set(matchers) - labels}"

    @pytest.mark.parametrize("rule", _rules(), ids=_rule_id)
    def test_matched_values_exist(self, rule: dict[str, Any]) -> None:
        """Values matched on tasks' ``status`` and webhooks' ``outcome`` are ones the code records."""
        known = {
            ("tracehook_tasks_total", "status"): TASK_STATUSES,
            ("tracehook_webhooks_received_total", "outcome"): WEBHOOK_OUTCOMES,
            ("tracehook_webhook_completion_seconds_bucket", "outcome"): COMPLETION_OUTCOMES,
            ("tracehook_webhook_completion_seconds_count", "outcome"): COMPLETION_OUTCOMES,
        }
        for name, matchers in _selectors(rule["expr"]):
            for label, (operator, value) in matchers.items():
                values = known.get((name, label))
                if values is None or operator not in ("=", "=~"):
                    continue
                alternatives = value.split("|") if operator == "=~" else [value]
                assert set(alternatives) <= set(values), (
                    f"{name}{{{label}}}: {set(alternatives) - set(values)}"
                )

    def test_selector_parser(self) -> None:
        """The checker itself: it finds names and matchers, and skips functions and grouping labels."""
        found = _selectors('sum by (le, queue) (rate(tracehook_x_bucket{a="1", b=~"c|d"}[5m])) > 0')
        assert [("tracehook_x_bucket", {"a": ("=", "1"), "b": ("=~", "c|d")})] == found


class TestObjectiveRules:
    """The objective's threshold is written the same everywhere: the default WEBHOOK_OBJECTIVE_S, as the
    ``le`` of a bucket the histogram has, in every rule, and in the alerts' texts."""

    def test_threshold_is_the_settings(self) -> None:
        """Every ``le`` matched on the completion histogram is the default objective (as the exposition
        writes a bound), which is a bucket bound; the alerts say it in seconds."""
        objective = AppSettings.webhook_objective_s
        assert objective in COMPLETION_BUCKETS_S
        bucket = "tracehook_webhook_completion_seconds_bucket"
        found = {
            matchers["le"]
            for rule in _rules()
            for name, matchers in _selectors(rule["expr"])
            if name == bucket and "le" in matchers
        }
        assert {("=", repr(objective))} == found
        objective_alerts = [rule for rule in _alerts() if "WebhookObjective" in rule["alert"]]
        assert 2 == len(objective_alerts)
        for rule in objective_alerts:
            assert f"within {objective:g} s" in rule["annotations"]["summary"]

    def test_alerts_read_windows_the_file_records(self) -> None:
        """Each burn-rate alert compares a long and a short window, both recorded, at the same rate."""
        recorded = {rule["record"] for rule in _rules() if "record" in rule}
        for rule in _alerts():
            if "WebhookObjective" not in rule["alert"]:
                continue
            windows = re.findall(r"(tracehook:\S+)\s*>\s*(\([^)]*\))", rule["expr"])
            assert 2 == len(windows), rule["expr"]
            assert {name for name, _ in windows} <= recorded
            assert 1 == len({threshold for _, threshold in windows})


class TestPrometheusConfig:
    """monitoring/prometheus.yml loads the rules and scrapes both kinds of process."""

    def test_jobs_and_rules(self) -> None:
        """Jobs for the intake and the workers; the rule file is the alerts; intervals are set."""
        config = _load(PROMETHEUS)
        assert ["alerts.yml"] == config["rule_files"]
        assert {"tracehook-intake", "tracehook-worker"} == {
            job["job_name"] for job in config["scrape_configs"]
        }
        assert re.fullmatch(r"\d+s", config["global"]["scrape_interval"])
        assert re.fullmatch(r"\d+s", config["global"]["evaluation_interval"])

    def test_target_down_alert_names_the_jobs(self) -> None:
        """The ``up`` alert's job regex matches every job of the config."""
        (rule,) = [rule for rule in _rules() if "up{" in rule["expr"]]
        pattern = re.search(r'job=~"([^"]+)"', rule["expr"])
        assert pattern is not None
        for job in _load(PROMETHEUS)["scrape_configs"]:
            assert re.fullmatch(pattern.group(1), job["job_name"])


ALERT_TESTS = ROOT / "monitoring" / "alerts.test.yml"


def _promtool() -> str | None:
    """promtool on the PATH, or where `make test` puts it (the virtualenv's bin)."""
    beside = Path(sys.executable).parent / "promtool"
    return shutil.which("promtool") or (str(beside) if beside.is_file() else None)


@pytest.fixture(scope="module")
def promtool() -> str:
    """The path of promtool, or a skip that says how to get it."""
    found = _promtool()
    if found is None:
        pytest.skip(
            "promtool is not installed: `make test` takes it from Debian's package prometheus "
            "(scripts/ensure-promtool.sh); or put any promtool on the PATH"
        )
    return found


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


class TestPromtool:
    """Prometheus's own checker takes the config and the rules, and the alerts pass their unit tests."""

    def test_check_config(self, promtool: str) -> None:
        """`promtool check config` on prometheus.yml, which loads alerts.yml."""
        done = run_promtool(promtool, "check", "config", str(PROMETHEUS))
        assert 0 == done.returncode, done.stdout + done.stderr
        assert "1 rule files found" in done.stdout + done.stderr

    def test_check_rules(self, promtool: str) -> None:
        """`promtool check rules` on alerts.yml: every rule parses, templates included."""
        done = run_promtool(promtool, "check", "rules", str(ALERTS))
        assert 0 == done.returncode, done.stdout + done.stderr
        assert f"{len(_rules())} rules found" in done.stdout + done.stderr

    def test_alert_unit_tests(self, promtool: str) -> None:
        """`promtool test rules` on alerts.test.yml: each alert fires, and stays quiet, when it should."""
        done = run_promtool(promtool, "test", "rules", str(ALERT_TESTS))
        assert 0 == done.returncode, done.stdout + done.stderr


class TestAlertUnitTestsCoverEveryAlert:
    """alerts.test.yml tests each alert both ways: a case where it fires and one where it stays quiet."""

    def test_fires_and_stays_quiet(self) -> None:
        """For every alert of alerts.yml, at least one evaluation expects it and one expects nothing."""
        cases = [case for test in _load(ALERT_TESTS)["tests"] for case in test["alert_rule_test"]]
        for rule in _alerts():
            name = rule["alert"]
            mine = [case for case in cases if case["alertname"] == name]
            assert any(case["exp_alerts"] for case in mine), f"{name}: no case where it fires"
            assert any(not case["exp_alerts"] for case in mine), f"{name}: no case where it stays quiet"
