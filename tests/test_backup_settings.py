"""[stages.S.backups] engine and [stages.S.backups.pgbackrest]: read and refused in-process,
each refusal naming the key; an object store's secret resolved only on the controller."""
from __future__ import annotations

from pathlib import Path

import pytest

from deploy import backup_settings, pgbr_setup
from deploy.config import _Table
from deploy.errors import ConfigError, DeployError
from deploy.stages import StageHost

HOSTS = (StageHost("app1", "10.0.0.11", ("app", "migrations")), StageHost("db", "10.0.0.10", ("db",)),
         StageHost("backup", "10.0.0.8", ("backup",)))


def read(data: dict, hosts=HOSTS):
    return backup_settings.read(_Table(Path("deploy.toml"), data, "stages.s.backups"), "/srv/app", hosts)


def test_pgbackrest_keeps_its_repository_on_the_backup_host_with_the_default_schedule():
    settings = read({"engine": "pgbackrest", "pgbackrest": {"options": {"repo1-type": "s3"}}})
    assert settings.host == "backup" and settings.pgbackrest.stanza == "app"
    assert settings.pgbackrest.unit == "postgresql@15-main.service"
    assert settings.pgbackrest.full_schedule.startswith("Sun") and settings.check_args()[0] == "pgbr-check"
    assert read({}).engine == "pgdump" and read({}).pgbackrest is None


@pytest.mark.parametrize("data, hosts, says", [
    ({"engine": "barman"}, HOSTS, "engine: expected one of pgdump, pgbackrest"),
    ({"engine": "pgbackrest"}, HOSTS[:2], 'exactly one host with the role "backup"'),
    ({"engine": "pgbackrest", "pgbackrest": {"stanza": "a b"}}, HOSTS, "stanza"),
    ({"engine": "pgbackrest", "pgbackrest": {"cluster": "../main"}}, HOSTS, "cluster"),
    ({"engine": "pgbackrest", "pgbackrest": {"options": {"repo1-path": "/tmp"}}}, HOSTS, "does not set itself"),
    ({"engine": "pgbackrest", "pgbackrest": {"options": {"repo1-s3-bucket": "a\nb"}}}, HOSTS, "one-line"),
])
def test_bad_engine_settings_are_refused_naming_the_key(data, hosts, says):
    with pytest.raises(ConfigError) as refused:
        read(data, hosts)
    assert says in str(refused.value) and "stages.s.backups" in str(refused.value)


def test_an_object_stores_secret_is_read_on_the_controller_and_written_only_into_the_repository_config(monkeypatch):
    settings = read({"engine": "pgbackrest", "pgbackrest": {"options": {
        "repo1-type": "s3", "repo1-s3-key-secret": "env:S3_SECRET_FOR_TEST"}}})
    monkeypatch.delenv("S3_SECRET_FOR_TEST", raising=False)
    with pytest.raises(DeployError, match="repo1-s3-key-secret: env:S3_SECRET_FOR_TEST is empty or missing"):
        pgbr_setup.option_values(settings.pgbackrest, Path("."))
    monkeypatch.setenv("S3_SECRET_FOR_TEST", "s3cr3t")
    values = pgbr_setup.option_values(settings.pgbackrest, Path("."))
    assert values == {"repo1-s3-key-secret": "s3cr3t", "repo1-type": "s3"}
    assert "repo1-s3-key-secret=s3cr3t" in pgbr_setup.repo_config(_stage(settings), settings.pgbackrest, HOSTS[1], values)


def test_hosts_on_other_ssh_ports_are_reached_and_known_on_those_ports():
    settings = read({"engine": "pgbackrest"})
    db, repo = StageHost("db", "10.0.0.10", ("db",), 2222), StageHost("backup", "backup.example", ("backup",), 22)
    assert "\npg1-host=10.0.0.10\npg1-host-port=2222\n" in pgbr_setup.repo_config(
        _stage(settings), settings.pgbackrest, db, {})
    assert "\nrepo1-host=backup.example\nrepo1-host-port=22\n" in pgbr_setup.db_config(
        _stage(settings), settings.pgbackrest, repo)
    keys = "ssh-ed25519 AAAAC3Nza root@db\nssh-rsa AAAAB3Nza root@db\n"
    assert pgbr_setup.known_hosts(db, keys) == "[10.0.0.10]:2222 ssh-ed25519 AAAAC3Nza\n[10.0.0.10]:2222 ssh-rsa AAAAB3Nza\n"
    assert pgbr_setup.known_hosts(repo, keys).startswith("backup.example ssh-ed25519 AAAAC3Nza\n")


def _stage(settings):
    from types import SimpleNamespace
    return SimpleNamespace(deploy_to="/srv/app", backups=settings, user="deploy")
