"""`fab maintenance.on` / `off` on the sandbox fleet: the page (503, Retry-After) through the
load balancer and on each host, kept across a deploy and a reload, gone when turned off."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import GOOD_MIGRATION, add_migration, deploy, health, ssh, through_lb

from deploy.maintenance import lb_page

pytestmark = pytest.mark.timeout(300)
PAGE = "<!doctype html><h1>Upgrading the boards</h1>\n"


def fetch(url: str) -> tuple[int, str | None, str]:
    """Status, Retry-After and body of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers.get("Retry-After"), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After"), exc.read().decode()


def test_maintenance_shows_the_page_through_the_load_balancer_and_survives_a_deploy_until_turned_off(deployed):
    refused = assert_clean_failure(deployed.fab("maintenance.on", "--page", "no-such.html", db=False))
    assert "--page no-such.html" in refused and "maintenance" not in health(deployed, "app1")
    (deployed.root / "maintenance.html").write_text(PAGE)
    on = deployed.fab("maintenance.on", "--page", "maintenance.html", "--retry-after", "90", db=False)
    assert on.returncode == 0 and "maintenance is on" in on.stdout, output(on)
    [url] = through_lb(deployed, "/boards")
    assert fetch(url) == (503, "90", lb_page(PAGE)), "the load balancer answers it (line ends as spaces)"
    direct = f"http://{deployed.sandbox.find('app1').address}:8000/boards"
    assert fetch(direct) == (503, "90", PAGE), "each app host answers the project's page as it is"
    assert health(deployed, "app2")["maintenance"] is True
    assert "MAINTENANCE" in deployed.fab("status", db=False).stdout
    for host in ("app1", "app2"):  # the load balancer answers the page itself, even with no app host up
        assert ssh(deployed, host, "sudo -n systemctl --no-pager stop app.service").returncode == 0
    try:
        assert fetch(url) == (503, "90", lb_page(PAGE))
    finally:
        for host in ("app1", "app2"):
            ssh(deployed, host, "sudo -n systemctl --no-pager start app.service")

    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    deployed.push()
    during = deploy(deployed)
    assert during.returncode == 0, output(during)
    assert fetch(url)[:1] == (503,) and health(deployed, "app1")["revision"] == "a0d0a0d0beef"
    assert ssh(deployed, "app1", "sudo -n systemctl --no-pager reload app.service").returncode == 0
    assert fetch(url)[0] == 503, "a reload keeps maintenance on"

    off = deployed.fab("maintenance.off", db=False)
    assert off.returncode == 0, output(off)
    for _ in range(4):  # both hosts, whichever the load balancer picks
        assert fetch(url)[0] == 200
    assert "maintenance" not in health(deployed, "app1")
    log = ssh(deployed, "app1", "grep maintenance /srv/app/deploy.log").stdout
    assert '"state": "on"' in log and '"state": "off"' in log

