"""The sandbox fleet: Debian containers booted with systemd as PID 1, OpenSSH's
ssh.service on each, Debian's PostgreSQL on the db host, HAProxy on the load
balancer, a git origin; and the fault switches doing real damage."""
from __future__ import annotations

import json
import pwd
import subprocess
from pathlib import Path

import paramiko
import pytest

from bench import runner as bench_runner
from deploy.config import load_project
from deploy.local.git import git
from deploy.sandbox import container, dbhost, faults, fleet, lbhost, network, status
from deploy.sandbox.spec import Sandbox
from deploy.sandbox.system import in_host, leader
from conftest import assert_clean_failure, output
from fleet_helpers import psql_command

pytestmark = pytest.mark.timeout(120)


def ssh(sandbox: Sandbox, host: str, command: str, *options: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """OpenSSH's client with the config `up` wrote (strict host key checking, key only)."""
    return subprocess.run(["ssh", "-F", str(sandbox.ssh_config), *options, host, command],
                          capture_output=True, text=True, timeout=timeout)


def as_root(sandbox: Sandbox, host: str, *argv: str) -> subprocess.CompletedProcess:
    return in_host(sandbox.find(host), list(argv), check=False)


def test_ssh_reaches_every_host_as_the_deploy_user_with_host_keys_checked(sandbox):
    for host in sandbox.hosts:
        proc = ssh(sandbox, host.name, "echo $(id -un) $(hostname) $(hostname -I)")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["deploy", host.name, host.address]


def test_ssh_refuses_a_host_whose_key_is_not_the_one_in_known_hosts(sandbox, tmp_path):
    wrong = tmp_path / "known_hosts"
    lines = sandbox.known_hosts.read_text().splitlines()
    app1, app2 = lines[0].split(), lines[1].split()
    wrong.write_text(" ".join([app1[0], *app2[1:]]) + "\n")  # app1's names, app2's key
    proc = ssh(sandbox, "app1", "true", "-o", f"UserKnownHostsFile={wrong}")
    assert proc.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr

    client = paramiko.SSHClient()
    client.load_host_keys(str(wrong))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(sandbox.find("app1").address, username="deploy", key_filename=str(sandbox.key),
                       look_for_keys=False, allow_agent=False, timeout=5)


def test_ssh_refuses_an_unknown_host_and_password_logins(sandbox, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    unknown = ssh(sandbox, "app1", "true", "-o", f"UserKnownHostsFile={empty}")
    assert unknown.returncode == 255 and "Host key verification failed" in unknown.stderr
    password = ssh(sandbox, "app1", "true", "-o", "PubkeyAuthentication=no",
                   "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr


def test_hosts_cannot_see_each_others_files_or_this_machines_checkout(sandbox):
    secret = "/srv/app/shared/only-on-app1"
    assert ssh(sandbox, "app1", f"echo app1 > {secret} && echo x > ~/mine && echo t > /tmp/t").returncode == 0
    seen = ssh(sandbox, "app2", f"ls {secret} ~/mine /tmp/t; ls -A {sandbox.project_root} {sandbox.state_dir}")
    assert "only-on-app1" not in seen.stdout and "mine" not in seen.stdout
    assert seen.stdout.strip().replace(f"{sandbox.project_root}:", "").replace(f"{sandbox.state_dir}:", "").strip() == ""
    assert ssh(sandbox, "app1", f"cat {secret}").stdout == "app1\n"


def test_app_hosts_reach_the_database_with_the_password_from_their_env_file(sandbox):
    for host in sandbox.apps:
        proc = ssh(sandbox, host.name, psql_command("-Atc", "select current_user"))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "app"
    mode = ssh(sandbox, "app1", "stat -c '%a %U' /srv/app/shared/env").stdout.split()
    assert mode == ["600", "deploy"]


def test_the_database_refuses_a_wrong_password(sandbox):
    proc = ssh(sandbox, "app1", f"PGCONNECT_TIMEOUT=3 psql 'postgresql://app:wrong@{sandbox.db.address}/app' -c 'select 1'")
    assert proc.returncode != 0
    assert 'password authentication failed for user "app"' in proc.stderr


def test_the_password_is_only_in_the_servers_env_files(sandbox):
    password = dbhost.password(sandbox)
    for path in (sandbox.stage_file, sandbox.ssh_config, sandbox.known_hosts, sandbox.state_file):
        assert password not in path.read_text(), path
    assert password not in json.dumps(status.sandbox_status(sandbox))
    assert password in ssh(sandbox, "app1", "cat /srv/app/shared/env").stdout


def test_hosts_reach_no_address_outside_the_sandbox_network(sandbox):
    probe = "python3 -c 'import socket; socket.create_connection((\"192.0.2.1\", 443), 2)'"
    proc = ssh(sandbox, "app1", probe)
    assert proc.returncode != 0 and "Network is unreachable" in proc.stderr


def test_hosts_fetch_commits_pushed_to_the_origin(sandbox, tmp_path):
    repo = tmp_path / "clone"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "work")
    (repo / "f.txt").write_text("hello\n")
    git(repo, "add", "f.txt")
    git(repo, "-c", "user.email=t@example.test", "-c", "user.name=T", "commit", "-qm", "a commit")
    commit = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "push", "-q", status.origin_status(sandbox)["push_url"], "HEAD:refs/heads/feature")
    proc = ssh(sandbox, "app2", f"git ls-remote {sandbox.origin_url} refs/heads/feature")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [commit, "refs/heads/feature"]


UNIT = """\
[Service]
Type=simple
User=deploy
ExecStart=/usr/bin/python3 -m http.server 8000 --bind 0.0.0.0 --directory /srv/app
"""


def test_every_host_is_booted_with_systemd_as_pid_1_running_sshd_journald_and_timers(sandbox):
    for host in sandbox.hosts:
        assert ssh(sandbox, host.name, "ps -p 1 -o comm=").stdout == "systemd\n", host.name
        state = as_root(sandbox, host.name, "systemctl", "is-system-running")
        assert state.stdout.strip() == "running", (host.name, state.stdout)
        assert as_root(sandbox, host.name, "systemctl", "is-active", "ssh.service", "systemd-journald.service",
                       "timers.target").stdout.split() == ["active"] * 3, host.name
    assert as_root(sandbox, "db", "systemctl", "is-active", dbhost.UNIT).stdout.strip() == "active"
    assert as_root(sandbox, "lb", "systemctl", "is-active", "haproxy.service").stdout.strip() == "active"
    assert as_root(sandbox, "app1", "systemctl", "is-active", dbhost.UNIT).stdout.strip() == "inactive"


def test_the_deploy_user_may_manage_the_app_service_through_sudo_and_nothing_else(sandbox):
    (sandbox.find("app1").rootfs / "etc/systemd/system/app.service").write_text(UNIT)
    assert as_root(sandbox, "app1", "systemctl", "daemon-reload").returncode == 0
    started = ssh(sandbox, "app1", "sudo -n systemctl start app.service && sudo -n systemctl is-active app.service")
    assert started.returncode == 0 and started.stdout.strip() == "active", started.stderr
    owner = ssh(sandbox, "app1", "ps -o user= -C python3")
    assert owner.stdout.split() == ["deploy"]
    for refused in ("sudo -n systemctl start sshd.service", "sudo -n id", "sudo -n systemctl edit app.service"):
        proc = ssh(sandbox, "app1", refused)
        assert proc.returncode != 0 and "password is required" in proc.stderr, refused
    assert ssh(sandbox, "app2", "sudo -n systemctl is-active app.service").stdout.strip() == "inactive"
    assert ssh(sandbox, "app1", "sudo -n systemctl stop app.service").returncode == 0
    assert ssh(sandbox, "app1", "pgrep -u deploy -f http.server").returncode == 1


def test_the_admin_account_has_full_sudo_for_setup_with_its_own_key_and_the_deploy_user_does_not(sandbox):
    as_admin = ("-l", "deploy-admin", "-o", f"IdentityFile={sandbox.admin_key}")
    assert ssh(sandbox, "app1", "sudo -n id -u", *as_admin).stdout.strip() == "0"
    assert ssh(sandbox, "app1", "sudo -n id -u").returncode != 0


def test_cutting_a_link_breaks_a_running_ssh_command_and_restoring_it_lets_new_ones_in(sandbox):
    argv = ["ssh", "-F", str(sandbox.ssh_config), "-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2",
            "app1", "echo started; sleep 60"]
    running = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert running.stdout.readline() == "started\n"
    faults.apply(sandbox, "app1", "cut-network")
    try:
        running.wait(timeout=20)
    finally:
        running.kill()
    assert running.returncode == 255
    assert ssh(sandbox, "app1", "true", "-o", "ConnectTimeout=2").returncode == 255
    assert ssh(sandbox, "app2", "true").returncode == 0
    faults.apply(sandbox, "app1", "restore-network")
    assert ssh(sandbox, "app1", "echo back").stdout == "back\n"


def test_a_full_disk_makes_writes_under_srv_fail_with_enospc(sandbox):
    faults.apply(sandbox, "app1", "fill-disk")
    full = ssh(sandbox, "app1", "head -c 1048576 /dev/zero > /srv/app/blob")
    assert full.returncode != 0 and "No space left on device" in full.stderr
    assert status.host_status(sandbox, sandbox.find("app1"))["disk"]["full"]
    assert ssh(sandbox, "app1", "echo fine > ~/elsewhere").returncode == 0  # only /srv is full
    faults.apply(sandbox, "app1", "free-disk")
    assert ssh(sandbox, "app1", "head -c 1048576 /dev/zero > /srv/app/blob").returncode == 0


def test_stopping_the_database_refuses_connections_until_it_is_started(sandbox):
    query = "PGCONNECT_TIMEOUT=3 " + psql_command("-Atc", "select 1")
    faults.apply(sandbox, "db", "stop-db")
    stopped = ssh(sandbox, "app1", query)
    assert stopped.returncode != 0 and "Connection refused" in stopped.stderr
    faults.apply(sandbox, "db", "start-db")
    assert ssh(sandbox, "app1", query).stdout == "1\n"


def sshd_pid(sandbox: Sandbox, host: str) -> int:
    return int(as_root(sandbox, host, "systemctl", "show", "--property=MainPID", "--value", "ssh.service").stdout)


def test_reset_gives_clean_hosts_and_an_empty_database_without_remaking_the_fleet(sandbox):
    sshd_before, init_before = sshd_pid(sandbox, "app1"), leader(sandbox.find("app1"))
    ssh(sandbox, "app1", psql_command("-c", "create table t (i int)") + " && mkdir /srv/app/releases "
                         "&& (sleep 300 >/dev/null 2>&1 &)")
    faults.apply(sandbox, "app2", "fill-disk")
    faults.apply(sandbox, "app2", "cut-network")
    fleet.reset(sandbox)
    assert (sshd_pid(sandbox, "app1"), leader(sandbox.find("app1"))) == (sshd_before, init_before)
    assert ssh(sandbox, "app1", "ls -A /srv/app").stdout.split() == ["shared"]
    assert "sleep" not in {p["command"] for p in status.processes(sandbox.find("app1"))}
    tables = ssh(sandbox, "app1", psql_command("-Atc", "\\dt"))
    assert tables.returncode == 0 and tables.stdout == ""
    assert ssh(sandbox, "app2", "head -c 1048576 /dev/zero > /srv/app/blob").returncode == 0


def test_up_again_repairs_what_is_missing_and_makes_nothing_twice(sandbox):
    assert as_root(sandbox, "app2", "systemctl", "stop", "ssh.service").returncode == 0
    container.stop(sandbox.find("lb"))
    report = fleet.up(sandbox)
    assert report["app2"] == ["started ssh.service"]
    assert report.pop("lb") == ["booted"]
    assert [made for part, made in report.items() if part not in ("app2", "origin")] == [[]] * (len(report) - 2)
    assert report["origin"] == []
    assert ssh(sandbox, "app2", "true").returncode == 0
    assert fleet.up(sandbox)["app2"] == []


def test_status_json_names_hosts_roles_addresses_processes_and_the_origin(sandbox, project):
    project.edit("deploy.toml", 'prefix = "fds"', f'prefix = "{sandbox.prefix}"')
    project.edit("deploy.toml", 'subnet = "10.213.0.0/24"', f'subnet = "{sandbox.network}"')
    project.edit("deploy.toml", 'state_dir = ".local/sandbox"', f'state_dir = "{sandbox.state_dir}"')
    proc = project.inv("sandbox.status", "--json", db=False)
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)
    assert state["up"] is True
    at = sandbox.address  # in the worker's fleet's subnet: .11 is app1
    assert [(h["name"], h["roles"], h["address"]) for h in state["hosts"]] == [
        ("app1", ["app", "migrations"], at(11)), ("app2", ["app"], at(12)), ("db", ["db"], at(10)),
        ("backup", ["backup"], at(8)), ("lb", ["lb"], at(9))]
    assert {(h["pid1"], h["system"]) for h in state["hosts"]} == {("systemd", "running")}
    assert state["load_balancer"]["url"] == f"http://{at(9)}:80/"
    db_processes = {p["command"] for p in state["hosts"][2]["processes"]}
    assert {"postgres", "sshd"} <= db_processes
    assert state["origin"]["fetch_url"] == f"git://{at(1)}/origin.git"
    assert Path(state["origin"]["push_url"]) == sandbox.origin
    assert state["database"]["running"] and "***" in state["database"]["url"]
    human = project.inv("sandbox.status", db=False)
    assert "app1" in human.stdout and f"git://{at(1)}/origin.git" in human.stdout


def test_up_with_eight_hosts_shrinks_and_down_leaves_nothing_behind(project, sandbox_fleet):
    """A sandbox of its own (own names, subnet, user), driven by `inv` as a user would."""
    for old, new in (('prefix = "fds"', 'prefix = "fde"'), ('subnet = "10.213.0.0/24"', 'subnet = "10.213.8.0/24"'),
                     ('user = "deploy"', 'user = "fdedeploy"')):
        project.edit("deploy.toml", old, new)
    spec = fleet.sandbox_for(load_project(project.root), 8)
    try:
        up = project.inv("sandbox.up", "--hosts", "8", db=False)
        assert up.returncode == 0, output(up)
        assert ssh(spec, "app8", "id -un").stdout == "fdedeploy\n"
        assert ssh(spec, "db", "hostname").stdout == "db\n"
        shrink = project.inv("sandbox.up", "--hosts", "1", db=False)
        assert shrink.returncode == 0, output(shrink)
        assert sorted(n for n in network.netns_names() if n.startswith("fde-")) == ["fde-app1", "fde-backup", "fde-db", "fde-lb"]
    finally:
        down = project.inv("sandbox.down", db=False)
    assert down.returncode == 0, output(down)
    assert "nothing of it is left" in down.stdout
    # Checked here, not taken from `down`'s word:
    assert not [n for n in network.netns_names() if n.startswith("fde-")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "fde-" not in links
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert str(spec.state_dir) not in mountinfo and "fde-" not in mountinfo
    assert not spec.state_dir.exists()
    cmdlines = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists()]
    assert not [c for c in cmdlines if str(spec.state_dir).encode() in c or b"10.213.8.1" in c]
    assert not container.nspawn_pids(lambda name: name.startswith("fde-"))
    assert not [*Path("/sys/fs/cgroup").glob("sandbox-fde-*"), *Path("/sys/fs/cgroup").glob("*/sandbox-fde-*")]
    for user in ("fdedeploy", "fdedeploy-admin"):  # the hosts' users live in the hosts only
        with pytest.raises(KeyError):
            pwd.getpwnam(user)


def test_sandbox_up_refuses_a_host_count_outside_one_to_eight(project):
    for bad in ("0", "9", "two", "1;touch /tmp/x"):
        proc = project.inv("sandbox.up", "--hosts", bad, db=False)
        text = assert_clean_failure(proc)
        assert "--hosts must be" in text and bad in text
    assert not (project.root / ".local" / "sandbox").exists()


def test_sandbox_benchmark_smoke_run_writes_its_table(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- bench:other -->\nkept\n<!-- /bench:other -->\n")
    bench_runner.run(load_project(), "sandbox", 1, results, options={"build_image": False})
    text = results.read_text()
    assert "kept" in text
    rows = [line for line in text.splitlines() if line.startswith(("| up", "| down", "| memory"))]
    assert len(rows) == 7 and all("| 1 |" in row for row in rows), rows


def test_the_load_balancer_asks_the_projects_own_live_path(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "migrations").mkdir()
    (root / "migrations" / "env.py").write_text("")
    text = (Path(__file__).resolve().parent.parent / "deploy.toml").read_text()
    (root / "deploy.toml").write_text(text.replace('models = ["app/models.py"]',
                                                   'models = []\nlive_path = "/-/deploy/live"'))
    sandbox = fleet.sandbox_for(load_project(root), 2)
    config = lbhost.config_text(sandbox, sandbox.lb)
    assert "option httpchk GET /-/deploy/live\n" in config and "/livez" not in config
