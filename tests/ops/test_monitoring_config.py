"""monitoring/: the Grafana dashboard and the Prometheus rules read only what GET /metrics exports.

Every PromQL expression (each dashboard target and variable query, each alert rule) is parsed with
promql-parser (requirements-dev.txt, the Rust PromQL parser's Python binding); the metric names are
the vector selectors of the syntax tree, so function names, label names (`le`, `by (...)`) and
strings never count as metrics. They are checked against the sample names of a real
`operations.metrics.render()` (`..._total`, `..._bucket`, ...), made with data in every family and the
Kafka-only sources' brokers replaced by mocks of `operations.kafka_lag`'s reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from operations import metrics
from operations.services import count_task_outcome
from transfers import services
from transfers.domain import TransferStatus
from transfers.store import get_transfer_store

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
DASHBOARD = MONITORING / "grafana" / "internal-transfer.json"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
PROMETHEUS = MONITORING / "prometheus" / "prometheus.yml"

JOB = "internal-transfer"
ALERT_NAMES = {"TransfersStuck", "ReconcileDifference", "ConsumerLagGrowing", "DeadLetters", "CeleryTaskFailures",
               "MetricsSourceDown", "ServiceDown", "WebhookDeliveriesLate"}
# Grafana's interval macros stand where PromQL wants a duration; any other `$__` macro fails to parse.
GRAFANA_MACROS = {"$__rate_interval": "2m", "$__interval": "30s", "$__range": "6h"}
# Series Prometheus itself writes for every scrape target, not exported by the service.
PROMETHEUS_SERIES = {"up"}
# Functions that treat their argument as a running counter: wrong for the duration histogram, a window.
COUNTER_FUNCTIONS = {"rate", "irate", "increase", "resets", "delta", "idelta", "deriv"}
DURATION_HISTOGRAM = f"{metrics.PREFIX}_transfer_duration_seconds"
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


# --- Reading the configuration -------------------------------------------------------------------------

def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def load_alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel but rows, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of every `label_values(selector, label)` variable."""
    found = [(f"dashboard panel {panel['title']!r} target {target['refId']}", target["expr"])
             for panel in dashboard_panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = LABEL_VALUES.match(query)
            assert match, f"variable {variable['name']}: only label_values(selector, label) is checked: {query}"
            found.append((f"dashboard variable {variable['name']}", match["selector"]))
    return found


def alert_expressions(rules: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f"alert {rule['alert']}", rule["expr"]) for rule in rules]


def all_expressions() -> list[tuple[str, str]]:
    return dashboard_expressions(load_dashboard()) + alert_expressions(load_alert_rules())


# --- PromQL --------------------------------------------------------------------------------------------

def parse_promql(expr: str) -> promql_parser.Expr:
    """The syntax tree of a dashboard's or a rule's expression; raises ValueError if it is not PromQL."""
    for macro, duration in GRAFANA_MACROS.items():
        expr = expr.replace(macro, duration)
    return promql_parser.parse(expr)


def _selector_names(selector: promql_parser.VectorSelector) -> set[str]:
    if selector.name:
        return {selector.name}
    matcher_sets = [selector.matchers.matchers, *selector.matchers.or_matchers]
    names = {m.value for matchers in matcher_sets for m in matchers
             if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal}
    if not names or any(m.name == "__name__" and m.op != promql_parser.MatchOp.Equal
                        for matchers in matcher_sets for m in matchers):
        raise ValueError(f"selector without a fixed metric name: {selector}")
    return names


def names_in(node: promql_parser.Expr) -> set[str]:
    """The metric names a syntax tree reads: its vector selectors (in ranges, subqueries, offsets too)."""
    names: set[str] = set()

    def visit(child: promql_parser.Expr) -> None:
        if isinstance(child, promql_parser.VectorSelector):
            names.update(_selector_names(child))

    promql_parser.walk(node, visit)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads."""
    return names_in(parse_promql(expr))


def unknown_metrics(expressions: list[tuple[str, str]], exported: set[str]) -> list[str]:
    """One line per expression that names a metric neither the service nor Prometheus exports."""
    problems = []
    for where, expr in expressions:
        unknown = metric_names(expr) - exported - PROMETHEUS_SERIES
        if unknown:
            problems.append(f"{where}: {sorted(unknown)} not exported, in {expr!r}")
    return problems


# --- What /metrics exports ------------------------------------------------------------------------------

def _create_transfer(user_id: int, source: str, destination: str, asset: str) -> str:
    request = services.TransferRequest(source, asset, destination, asset, "1")
    return services.create_transfer(user_id, request).record.request_id


def _kafka_lag(
    bootstrap_servers: str, groups: dict[str, list[str]], timeout_seconds: float
) -> dict[tuple[str, str], int]:
    return {(group, topic): 7 for group, topic_names in groups.items() for topic in topic_names}


def _topic_totals(bootstrap_servers: str, topic_names: list[str], timeout_seconds: float) -> dict[str, int]:
    return dict.fromkeys(topic_names, 2)


@pytest.fixture
def exported_samples(orm_transfer_store: None, settings: Any) -> dict[str, set[str]]:
    """{family: its sample names} of a real render(), with data in every family.

    The ORM store (the ScyllaDB store leaves counts and durations out); in flight and finished transfers
    (counts, duration buckets); a task failure and a retry; the Kafka bus, whose brokers are mocked at
    operations.kafka_lag's two reads so that the families come from the real collectors.
    """
    _create_transfer(1, "funding", "spot", "USDT")  # in flight: requesting
    record = get_transfer_store().get(_create_transfer(2, "spot", "funding", "USDT"))
    assert get_transfer_store().compare_and_set_status(
        record.request_id, {TransferStatus.REQUESTING}, TransferStatus.SUCCESS, None,
        now_ms=record.created_at_ms + 1_500)
    count_task_outcome("settlement.settle_balance_events", "failures")
    count_task_outcome("settlement.settle_balance_events", "retries")
    settings.MESSAGE_BUS = "kafka"
    with mock.patch("operations.kafka_lag.consumer_lag", side_effect=_kafka_lag), \
            mock.patch("operations.kafka_lag.topic_totals", side_effect=_topic_totals):
        text = metrics.render().decode()
    samples: dict[str, set[str]] = {}
    up: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        names = samples.setdefault(family.name, set())
        for sample in family.samples:
            names.add(sample.name)
            if sample.name == f"{metrics.PREFIX}_metrics_source_up":
                up[sample.labels["source"]] = sample.value
    assert up == dict.fromkeys(metrics.SOURCES, 1.0), "every source must answer, or its families are missing"
    empty = sorted(family for family, names in samples.items() if not names)
    assert not empty, f"arrange data for {empty}: a family without samples exports no names to check against"
    return samples


@pytest.fixture
def exported_names(exported_samples: dict[str, set[str]]) -> set[str]:
    return set().union(*exported_samples.values())


# --- Tests ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("where", "expr"), all_expressions(), ids=[where for where, _ in all_expressions()])
def test_every_expression_parses(where: str, expr: str) -> None:
    assert metric_names(expr), f"{where} names no metric: {expr}"


@pytest.mark.django_db
def test_the_dashboard_and_the_alerts_name_only_exported_metrics(exported_names: set[str]) -> None:
    assert unknown_metrics(all_expressions(), exported_names) == []


@pytest.mark.django_db
def test_the_dashboard_shows_every_exported_family(exported_samples: dict[str, set[str]]) -> None:
    # Also shows that the extraction finds names: every family, through its sample names.
    named = set().union(*(metric_names(expr) for _, expr in dashboard_expressions(load_dashboard())))
    shown = {family for family, names in exported_samples.items() if names & named}
    assert sorted(set(exported_samples) - shown) == []
    assert len(set(exported_samples)) >= 11  # the families of operations/metrics.py


@pytest.mark.django_db
def test_a_metric_the_service_does_not_export_is_reported(exported_names: set[str]) -> None:
    wrong = [
        ("misspelled", "sum(rate(internal_transfer_transfer_created_total[5m]))"),
        ("counter without _total", "internal_transfer_transfers_created > 0"),
        ("histogram without _bucket", "histogram_quantile(0.99, internal_transfer_transfer_duration_seconds)"),
        ("by __name__", '{__name__="internal_transfer_dead_letter_total"}'),
        ("in a subquery", "max_over_time(internal_transfer_kafka_lag[30m:1m])"),
        ("after unless/offset", "internal_transfer_metrics_source_up unless internal_transfer_up offset 5m"),
    ]
    problems = unknown_metrics(wrong, exported_names)
    assert [line.split(":")[0] for line in problems] == [where for where, _ in wrong]
    assert unknown_metrics([("right", "sum(rate(internal_transfer_transfers_created_total[5m]))")],
                           exported_names) == []


def test_a_selector_without_a_fixed_metric_name_is_refused() -> None:
    with pytest.raises(ValueError, match="without a fixed metric name"):
        metric_names('{__name__=~"internal_transfer_.*"}')
    with pytest.raises(ValueError):
        parse_promql("rate(internal_transfer_transfers_created_total[5m]")


def test_the_duration_histogram_is_read_not_rated() -> None:
    """It covers the transfers finished in a window, not a running total (docs/architecture.md, "Metrics")."""
    for where, expr in all_expressions():
        def visit(node: promql_parser.Expr, where: str = where, expr: str = expr) -> None:
            if isinstance(node, promql_parser.Call) and node.func.name in COUNTER_FUNCTIONS:
                read = set().union(*(names_in(arg) for arg in node.args))
                assert not {name for name in read if name.startswith(DURATION_HISTOGRAM)}, \
                    f"{where}: {node.func.name}() of the duration histogram in {expr}"

        promql_parser.walk(parse_promql(expr), visit)


def test_the_alert_rules() -> None:
    rules = load_alert_rules()
    assert {rule["alert"] for rule in rules} == ALERT_NAMES
    assert len(rules) == len(ALERT_NAMES)
    for rule in rules:
        name = rule["alert"]
        assert rule["expr"].strip(), name
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), f"{name}: for {rule['for']!r}"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        for annotation in ("summary", "description", "runbook"):
            assert rule["annotations"][annotation].strip(), f"{name}: no {annotation}"
        for reference in rule["annotations"]["runbook"].split(";"):
            path = reference.strip().partition("#")[0]
            assert (REPO / path).is_file(), f"{name}: runbook {path} does not exist"
        assert f"### {name}" in (MONITORING / "README.md").read_text(), f"{name} is not explained in the README"


def test_the_dashboard() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "internal-transfer"
    assert dashboard["title"] == "Internal transfers"
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    panels = list(dashboard_panels(dashboard))
    assert len(panels) >= 10
    all_ids = [panel["id"] for top in dashboard["panels"] for panel in [top, *top.get("panels", [])]]
    assert len(all_ids) == len(set(all_ids)), "panel ids must be unique"
    for panel in panels:
        title = panel["title"]
        assert panel["targets"], f"{title}: no target"
        assert panel["datasource"] == datasource, title
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"]), title
        for target in panel["targets"]:
            assert target["datasource"] == datasource, title
            assert target["expr"].strip(), title
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == datasource, variable["name"]


def test_the_scrape_config() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS.parent / config["rule_files"][0]).is_file()
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    assert job["metrics_path"] == "/metrics"
    assert job["scrape_interval"] == "30s"
    assert job["authorization"] == {"type": "Bearer",
                                    "credentials_file": "/etc/prometheus/internal-transfer-metrics-token"}
    # ServiceDown watches this job.
    [service_down] = [rule for rule in load_alert_rules() if rule["alert"] == "ServiceDown"]
    selector = parse_promql(service_down["expr"]).lhs
    assert selector.name == "up"
    assert [(m.name, m.value) for m in selector.matchers.matchers] == [("job", JOB)]
