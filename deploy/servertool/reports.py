"""How a backup check's report is shown: a table for people, node_exporter's textfile
format for Prometheus. No imports, so the controller can use it too."""
from __future__ import annotations


def table(report: dict) -> str:
    """The human table."""
    rows = [f"backup check of {report['backup'] or '(no backup)'} at {report['time']}: {report['state']}"]
    rows += [f"  {c['check']:<8} {c['state']:<9} {c['detail']}" for c in report["checks"]]
    return "\n".join(rows)


def prometheus(report: dict, database: str) -> str:
    """The run as node_exporter textfile-collector metrics."""
    label = f'database="{database}"'
    lines = ["# HELP flask_deploy_backup_check_status Backup check result: 0 OK, 1 WARNING, 2 CRITICAL.",
             "# TYPE flask_deploy_backup_check_status gauge",
             f"flask_deploy_backup_check_status{{{label},check=\"all\"}} {report['status']}"]
    lines += [f"flask_deploy_backup_check_status{{{label},check=\"{c['check']}\"}} {c['status']}"
              for c in report["checks"]]
    lines += ["# HELP flask_deploy_backup_check_timestamp_seconds When the backup check last ran.",
              "# TYPE flask_deploy_backup_check_timestamp_seconds gauge",
              f"flask_deploy_backup_check_timestamp_seconds{{{label}}} {report['time_epoch']}"]
    by_name = {c["check"]: c for c in report["checks"]}
    if "taken" in by_name.get("age", {}):
        lines += ["# HELP flask_deploy_backup_newest_timestamp_seconds When the newest backup was taken.",
                  "# TYPE flask_deploy_backup_newest_timestamp_seconds gauge",
                  f"flask_deploy_backup_newest_timestamp_seconds{{{label}}} {by_name['age']['taken']}",
                  "# HELP flask_deploy_backup_newest_size_bytes Size of the newest backup.",
                  "# TYPE flask_deploy_backup_newest_size_bytes gauge",
                  f"flask_deploy_backup_newest_size_bytes{{{label}}} {by_name['size']['bytes']}"]
    if "seconds" in by_name.get("restore", {}):
        lines += ["# HELP flask_deploy_backup_restore_test_seconds Duration of the last real restore test.",
                  "# TYPE flask_deploy_backup_restore_test_seconds gauge",
                  f"flask_deploy_backup_restore_test_seconds{{{label}}} {by_name['restore']['seconds']}"]
    if report.get("restore_test_passed_epoch"):
        lines += ["# HELP flask_deploy_backup_restore_test_last_success_timestamp_seconds When a real restore "
                  "test last passed.",
                  "# TYPE flask_deploy_backup_restore_test_last_success_timestamp_seconds gauge",
                  f"flask_deploy_backup_restore_test_last_success_timestamp_seconds{{{label}}} "
                  f"{report['restore_test_passed_epoch']}"]
    return "\n".join(lines) + "\n"
