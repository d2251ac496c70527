"""Monitoring that plugs in: the textfiles pass Prometheus's own `promtool check metrics`, the
shipped alert rules pass `promtool check rules` and fire in `promtool test rules`' cases
(tests/monitoring/), and the Grafana dashboard asks only for metrics the toolkit writes.
The last test reads the real textfiles a deploy and the backup check timer wrote on the fleet."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from conftest import output
from fleet_helpers import FAILING_MIGRATION, add_migration, current, deploy, ssh
from receiver import Receiver, notifying

from deploy.sandbox.system import in_host
from deploy.servertool.reports import prometheus
from deploy.ssh.deploy_metrics import render

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "monitoring" / "flask_deploy.rules.yml"
RULE_TESTS = ROOT / "tests" / "monitoring" / "flask_deploy.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana-dashboard.json"
PROMTOOL = shutil.which("promtool") or "promtool"  # Debian's prometheus package: ./dev installs it

REPORT = {"status": 0, "time_epoch": 1795572000.0, "restore_test_passed_epoch": 1795571000.0,
          "checks": [{"check": "age", "status": 0, "taken": 1795570000}, {"check": "size", "status": 0, "bytes": 123456},
                     {"check": "sha256", "status": 0}, {"check": "read", "status": 0},
                     {"check": "restore", "status": 0, "seconds": 4.2}]}
DEPLOYED = {"time": "2026-11-25T02:00:00Z", "action": "deploy", "outcome": "ok", "timings": {"build": 3.2, "switch": 1}}


def check_metrics(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)


def metric_names(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_the_textfiles_pass_promtool_check_metrics_with_prometheus_naming():
    for text in (render('odd "stage"\\', DEPLOYED, {"release": "r1", "commit": "c", "revision": "ab12"}),
                 render("s", {**DEPLOYED, "outcome": "failed"}, {}), prometheus(REPORT, "app")):
        checked = check_metrics(text)
        assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
            text, checked.stdout, checked.stderr)


def test_the_alert_rules_pass_promtool_and_each_alert_fires_in_a_test_case():
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    alerts = re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.M)
    tests = RULE_TESTS.read_text()
    firing = re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests)
    assert len(alerts) == 6 and set(alerts) == set(firing), (alerts, firing)


def test_the_dashboard_asks_only_for_metrics_the_toolkit_writes():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    asked = {name for e in exprs for name in re.findall(r"flask_deploy_\w+", e)}
    written = metric_names(render("s", DEPLOYED, {"release": "r"})) | metric_names(prometheus(REPORT, "app"))
    assert asked and asked <= written, asked - written
    rules = set(re.findall(r"flask_deploy_\w+(?=[\s{)\[])", RULES.read_text()))  # metrics, not the file name
    assert rules <= written, rules - written


def test_a_deploy_and_the_backup_check_timer_write_textfiles_that_promtool_accepts(deployed):
    path = "/srv/app/metrics/flask_deploy_deploy.prom"
    for host in ("app1", "app2"):
        text = ssh(deployed, host, f"cat {path}").stdout
        assert check_metrics(text).returncode == 0, text
        assert "flask_deploy_last_deploy_success{stage=\"sandbox\"} 1" in text, text
        assert f'release="{current(deployed, host)}"' in text, text
    add_migration(deployed, FAILING_MIGRATION, "f00dfa11beef_fail.py")
    failed = deploy(deployed)
    assert failed.returncode == 1, output(failed)
    after = ssh(deployed, "app2", f"cat {path}; ls -a /srv/app/metrics").stdout
    assert "flask_deploy_last_deploy_success{stage=\"sandbox\"} 0" in after and ".tmp" not in after, after
    assert f'release="{deployed.first_release}"' in after, "the info metric names what the host serves"
    assert deployed.fab("setup", db=False).returncode == 0  # the backup units
    in_host(deployed.sandbox.find("app1"), ["systemctl", "start", "app-backup.service"])
    in_host(deployed.sandbox.find("app1"), ["systemctl", "start", "app-backup-check.service"])
    backup_text = ssh(deployed, "app1", "cat /srv/app/metrics/flask_deploy_backup.prom").stdout
    checked = check_metrics(backup_text)
    assert checked.returncode == 0 and "flask_deploy_backup_check_status" in backup_text, (backup_text, checked.stdout)

    ssh(deployed, "app1", 'f=$(ls -d /srv/app/backups/*/ | tail -1); echo corrupted >> "$f/toc.dat"')
    notifying(deployed)
    webhook = Receiver()
    try:
        critical = deployed.fab("backups.check", "--skip-restore-test", db=False, env={"TEST_WEBHOOK": webhook.url})
    finally:
        webhook.close()
    assert critical.returncode == 2, output(critical)
    [(_, _, event)] = webhook.received
    assert (event["event"], event["outcome"]) == ("backup_check", "CRITICAL") and "sha256" in event["error"], event
