"""Prometheus config and alerts pass promtool and fire when they should; the dashboard and logrotate work."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.deploy.harness import DASHBOARD, LOGROTATE, PROMETHEUS_DIR, require_tool

# The series the gateway exports (citadel_proxy/observability/metrics.py and the audit spool).
GATEWAY_METRICS = {
    "citadel_requests_total",
    "citadel_request_duration_seconds_bucket",
    "citadel_time_to_first_token_seconds_bucket",
    "citadel_tokens_per_second_bucket",
    "citadel_prompt_tokens_total",
    "citadel_completion_tokens_total",
    "citadel_active_streams",
    "citadel_upstream_errors_total",
    "citadel_upstream_up",
    "citadel_audit_spooled_records",
}


def _promtool(*args: str, cwd: Path | None = None) -> str:
    promtool = require_tool("promtool", "prometheus")
    result = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_prometheus_config_is_valid() -> None:
    out = _promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert "1 rule files found" in out


def test_alert_rules_are_valid() -> None:
    _promtool("check", "rules", str(PROMETHEUS_DIR / "citadel-rules.yml"))


def _alert(name: str, **labels: str) -> dict[str, Any]:
    return {"alertname": name, "labels": {"alertname": name, **labels}}


def _case(at: str, alert: str, fired: list[dict[str, str]]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels} for labels in fired]}


def _rule_tests(rules: Path) -> dict[str, Any]:
    gw = {"job": "citadel-proxy", "instance": "gw:8002"}
    ttft = 'citadel_time_to_first_token_seconds_bucket{{instance="gw:8002", route="/v1/voice", le="{le}"}}'
    series = [
        ('up{job="citadel-proxy", instance="gw:8002"}', "1 1 0x10"),
        ('citadel_requests_total{instance="gw:8002", route="/v1/chat/completions", status="200"}', "0+60x30"),
        ('citadel_requests_total{instance="gw:8002", route="/v1/chat/completions", status="502"}', "0+30x30"),
        (ttft.format(le="1"), "0x30"),
        (ttft.format(le="10"), "0+6x30"),
        (ttft.format(le="+Inf"), "0+6x30"),
        ('citadel_audit_spooled_records{instance="gw:8002"}', "0 0 0 0 0+5x26"),
        ('citadel_upstream_up{instance="gw:8002"}', "1 1 0x28"),
        ('citadel_upstream_errors_total{instance="gw:8002", kind="upstream_unavailable"}', "0+30x30"),
    ]
    crit, warn = {"severity": "critical"}, {"severity": "warning"}
    return {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    _case("1m", "CitadelGatewayDown", []),
                    _case("5m", "CitadelGatewayDown", [{**gw, **crit}]),
                    _case("25m", "CitadelHighErrorRate", [warn]),
                    _case("25m", "CitadelSlowFirstToken", [{"route": "/v1/voice", **warn}]),
                    _case("4m", "CitadelAuditSpoolGrowing", []),
                    _case("25m", "CitadelAuditSpoolGrowing", [{"instance": "gw:8002", **crit}]),
                    _case("1m", "CitadelUpstreamDown", []),
                    _case("5m", "CitadelUpstreamDown", [{"instance": "gw:8002", **crit}]),
                    _case("25m", "CitadelUpstreamErrors", [{"kind": "upstream_unavailable", **warn}]),
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'up{job="citadel-proxy", instance="gw:8002"}', "values": "1x30"},
                    {"series": 'citadel_requests_total{status="200"}', "values": "0+60x30"},
                    {"series": 'citadel_requests_total{status="503"}', "values": "0x30"},
                    {"series": 'citadel_audit_spooled_records{instance="gw:8002"}', "values": "3x30"},
                    {"series": 'citadel_upstream_up{instance="gw:8002"}', "values": "1x30"},
                ],
                "alert_rule_test": [
                    _case("25m", name, [])
                    for name in (
                        "CitadelGatewayDown",
                        "CitadelHighErrorRate",
                        "CitadelAuditSpoolGrowing",
                        "CitadelUpstreamDown",
                        "CitadelSlowFirstToken",
                        "CitadelUpstreamErrors",
                    )
                ],
            },
        ],
    }


def test_alerts_fire_on_trouble_and_stay_quiet_when_healthy(tmp_path: Path) -> None:
    # promtool compares annotations too; their templates are checked by `check rules`, so the copy
    # under test drops them and the expectations stay about when alerts fire and with which labels.
    groups = YAML(typ="safe").load(PROMETHEUS_DIR / "citadel-rules.yml")
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "citadel-rules.yml"
    rules.write_text(json.dumps(groups))
    tests = tmp_path / "citadel-rules.test.yml"
    tests.write_text(json.dumps(_rule_tests(rules), indent=1))  # JSON is YAML
    _promtool("test", "rules", str(tests))


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "model"} <= variables
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


def test_dashboard_queries_are_valid_promql_on_gateway_metrics(tmp_path: Path) -> None:
    exprs = _dashboard_exprs()
    used = {name for e in exprs for name in re.findall(r"\b(citadel_[a-z_]+)\b", e)}
    assert used <= GATEWAY_METRICS, used - GATEWAY_METRICS
    # promtool parses PromQL only inside rules: each query becomes a recording rule, with Grafana's
    # variables replaced by what they expand to.
    concrete = [
        e.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$model", ".*") for e in exprs
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(concrete)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))
    _promtool("check", "rules", str(path))


def test_logrotate_rotates_the_gateway_logs(tmp_path: Path) -> None:
    logrotate = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin")
    if logrotate is None:
        pytest.skip("logrotate is not installed")
    logs = tmp_path / "logs"
    (logs / "audit").mkdir(parents=True)
    (logs / "gateway.log").write_text("one line\n")
    (logs / "audit" / "spool.log").write_text("one line\n")
    text = LOGROTATE.read_text()
    assert "su citadel citadel" in text and "/opt/citadel/logs/" in text
    # The citadel user exists only on a deployed host.
    text = text.replace("/opt/citadel/logs/", f"{logs}/").replace("su citadel citadel", "su root root")
    config = tmp_path / "citadel-proxy"
    config.write_text(text)
    config.chmod(0o644)
    result = subprocess.run(
        [logrotate, "--force", "--state", str(tmp_path / "state"), str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr
    assert (logs / "gateway.log.1").exists()
    assert (logs / "audit" / "spool.log.1").exists()
    assert (logs / "gateway.log").read_text() == ""  # copytruncate: the gateway keeps writing the same file
