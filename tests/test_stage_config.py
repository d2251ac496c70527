"""Configuration errors name the file, the key and what was expected, before any SSH."""
import shutil

import pytest
from conftest import REPO, assert_clean_failure

from deploy.config import load_project
from deploy.errors import ConfigError
from deploy.stages import load_stage

STAGE = '''
[stages.bad]
user = "deploy"
key = "deploy.toml"
known_hosts = "deploy.toml"
repo = "git://example.invalid/app.git"
deploy_to = "/srv/app"
{extra}
'''


ONE_HOST = 'hosts = [{name = "a", address = "10.0.0.1", roles = ["app", "migrations"]}]'


@pytest.mark.parametrize("extra, message", [
    ("", "[stages.bad] hosts: expected a list of tables"),
    ('hosts = [{name = "a", address = "10.0.0.1", roles = ["web"]}]', "roles: expected roles among app, migrations, db, backup, got 'web'"),
    ('hosts = [{name = "a", address = "10.0.0.1", roles = ["app"]}]', 'exactly one host with the role "migrations"'),
    ('hosts = [{name = "a", address = "-oProxyCommand=x", roles = ["app", "migrations"]}]', "address: expected a host name or IP address"),
    ('hosts = [{name = "a", address = "10.0.0.1", roles = ["app", "migrations"]}]\nbatch = -1', "batch: expected a whole number from 0 to 1000"),
    ('hosts = [{name = "a", address = "10.0.0.1", roles = ["app", "migrations"]}]\nrollback = "pray"', "rollback: expected one of"),
    (f'{ONE_HOST}\n[stages.bad.backups]\nformat = "tar"', "[stages.bad.backups] format: expected directory or custom"),
    (f'{ONE_HOST}\n[stages.bad.backups]\nwarn_age_hours = 30\ncrit_age_hours = 20',
     "crit_age_hours: expected a number from 30 to 8784, got 20"),
    (f'{ONE_HOST}\n[stages.bad.backups]\nsize_tolerance = 1.5', "size_tolerance: expected a number from 0.01 to 0.99"),
    (f'{ONE_HOST}\n[stages.bad.backups]\nschedule = "daily; rm -rf /"', "schedule: expected a systemd calendar spec"),
    (f'{ONE_HOST}\n[stages.bad.backups]\ntextfile = "metrics.txt"', "textfile: expected an absolute path ending in .prom"),
    (f'{ONE_HOST}\nadmin_user = "root-ish"', "admin_key: expected the admin account's own private key"),
    (f'{ONE_HOST}\n[stages.bad.lb]\naddress = "-oProxyCommand=x"', "[stages.bad.lb] address: expected a host name or IP address"),
    (f'{ONE_HOST}\n[stages.bad.lb]\naddress = "lb"\nservers = {{ b = "web1" }}',
     "[stages.bad.lb] servers: expected a table of app host name = HAProxy server name (app hosts: a)"),
    (f'{ONE_HOST}\n[stages.bad.lb]\naddress = "lb"\nservers = {{ a = "web 1; x" }}', "servers: expected HAProxy server names"),
    (f'{ONE_HOST}\n[stages.bad.lb]\naddress = "lb"\nbackend = "app;shutdown"', "backend: expected a HAProxy backend name"),
    (f'{ONE_HOST}\nadmin_user = "root-ish"\nadmin_key = "./deploy.toml"',
     "admin_key: expected a key of its own, but it is the deploy user's key"),
])
def test_a_malformed_stage_is_refused_with_the_file_and_the_key(config_root, extra, message):
    with open(config_root / "deploy.toml", "a") as config:
        config.write(STAGE.format(extra=extra))
    with pytest.raises(ConfigError) as refused:
        load_stage(load_project(config_root), "bad")
    assert "deploy.toml" in str(refused.value) and message in str(refused.value)


@pytest.fixture
def config_root(tmp_path):
    """The demo's deploy.toml in a folder of its own: read in-process, no database, no fab."""
    shutil.copy(REPO / "deploy.toml", tmp_path / "deploy.toml")
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "env.py").write_text("")
    return tmp_path


@pytest.mark.parametrize("old, new, message", [
    ('app = "app:create_app"', '# no app', "[project] app: expected a non-empty string (it is missing)"),
    ('models = ["app/models.py"]', 'models = []\nhealth_path = "healthz"', "health_path: expected a URL path such as /healthz"),
    ('models = ["app/models.py"]', 'models = []\nlock = "../secrets/app.lock"', "[project] lock: expected a path in the project"),
    ('models = ["app/models.py"]', 'models = []\ngunicorn_config = "../x.py"', "gunicorn_config: expected a .py path in the project"),
    ('models = ["app/models.py"]', 'models = []\nenv = ["SECRET KEY"]', "[project] env: expected environment variable names"),
    ('exclude = []', 'exclude = []\nbaseline = "abc; rm"', "[lint] baseline: expected a revision id"),
    ('exclude = []', 'exclude = []\nwarn = "prefer-identity"', "[lint] warn: expected a list of strings"),
])
def test_a_malformed_project_table_is_refused_with_the_key(config_root, old, new, message):
    path = config_root / "deploy.toml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError) as refused:
        load_project(config_root)
    assert "deploy.toml" in str(refused.value) and message in str(refused.value), str(refused.value)


def test_fab_reports_a_malformed_stage_as_a_message_not_a_traceback(project):
    with open(project.root / "deploy.toml", "a") as config:
        config.write(STAGE.format(extra='hosts = [{name = "a", address = "10.0.0.1", roles = ["web"]}]'))
    text = assert_clean_failure(project.fab("status", "--stage", "bad", db=False))
    assert "deploy.toml" in text and "roles: expected roles among app, migrations, db, backup, got 'web'" in text


def test_a_missing_ssh_key_is_named(project):
    with open(project.root / "deploy.toml", "a") as config:
        config.write(STAGE.replace('key = "deploy.toml"', 'key = "no/such/key"').format(
            extra='hosts = [{name = "a", address = "10.0.0.1", roles = ["app", "migrations"]}]'))
    text = assert_clean_failure(project.fab("deploy", "--stage", "bad", db=False))
    assert "key: expected an existing file" in text and "no/such/key" in text


def test_a_host_that_does_not_resolve_is_named_before_anything_runs(project):
    with open(project.root / "deploy.toml", "a") as config:
        config.write(STAGE.replace('known_hosts = "deploy.toml"', 'known_hosts = "known_hosts"').format(
            extra='hosts = [{name = "ghost", address = "no-such-host.invalid", roles = ["app", "migrations"]}]'))
    (project.root / "known_hosts").write_text("")
    text = assert_clean_failure(project.fab("deploy", "--stage", "bad", db=False))
    assert "ghost: its address no-such-host.invalid does not resolve" in text, text


def test_a_known_hosts_file_that_is_not_one_is_a_clear_error(project):
    with open(project.root / "deploy.toml", "a") as config:
        config.write(STAGE.format(extra=ONE_HOST))
    text = assert_clean_failure(project.fab("deploy", "--stage", "bad", db=False))
    assert "deploy.toml is not a readable known_hosts file" in text, text
