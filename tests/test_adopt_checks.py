"""What `flask-pg-deploy init` and the local tasks find before anything runs, from a trial
adoption of an older public app: tools too old for the workflow, which app to load, a lock that
cannot be resolved (nothing written), an app on SQLite, SQLAlchemy 1.4's legacy connection."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy import adopt
from deploy.errors import AppNotLoaded, ConfigError, DeployError
from deploy.migrations import FlaskDb
from deploy_runtime import migrations as runtime


def test_init_refuses_tools_too_old_for_the_workflow_naming_each_and_what_to_do():
    with pytest.raises(ConfigError) as old:
        adopt.check_versions({"flask": "1.1.4", "flask-migrate": "2.0.3", "sqlalchemy": "1.4.52"})
    assert "flask 1.1.4 (needs >= 2.2)" in str(old.value) and "flask-migrate 2.0.3 (needs >= 4.0.2)" in str(old.value)
    assert "requirements.txt" in old.value.hint
    with pytest.raises(ConfigError) as missing:
        adopt.check_versions({"flask": "3.1.0", "flask-migrate": None, "sqlalchemy": "2.0.36"})
    assert "flask-migrate is not installed" in str(missing.value) and "pip install -r" in missing.value.hint
    with pytest.raises(ConfigError, match=r"flask-migrate 4.0.1 \(needs >= 4.0.2\)"):  # flask db check came in 4.0.2
        adopt.check_versions({"flask": "2.2.5", "flask-migrate": "4.0.1", "sqlalchemy": "1.4.52"})
    adopt.check_versions({"flask": "2.2.5", "flask-migrate": "4.0.2", "sqlalchemy": "1.4.52"})  # passes


def test_init_picks_the_module_that_sets_up_flask_migrate_over_a_factory_that_needs_an_argument(tmp_path: Path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("def create_app(config_name):\n    return Flask(__name__)\n")
    (tmp_path / "flasky.py").write_text("import os\nfrom app import create_app, db\nfrom flask_migrate import Migrate\n"
                                        "app = create_app(os.getenv('FLASK_CONFIG') or 'default')\n"
                                        "migrate = Migrate(app, db)\n")
    (tmp_path / "worker.py").write_text("from flask import Flask\nside = Flask(__name__)\n")
    assert adopt.detect_app(tmp_path, adopt.python_files(tmp_path)) == "flasky:app"
    (tmp_path / "flasky.py").unlink()
    (tmp_path / "worker.py").unlink()
    with pytest.raises(ConfigError, match="no module makes a Flask app"):  # flask cannot call create_app(config_name)
        adopt.detect_app(tmp_path, adopt.python_files(tmp_path))


def test_a_lock_that_cannot_be_resolved_stops_init_before_it_writes_anything(tmp_path: Path):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "env.py").write_text("from alembic import context\n")
    (tmp_path / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    (tmp_path / "requirements.txt").write_text("gunicorn==19.7.1\nflask-pg-deploy-no-such-package-anywhere==1.0\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(DeployError, match="nothing was written"):
        adopt.init(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("output, says", [
    ("Usage: flask [OPTIONS] COMMAND [ARGS]...\nError: No such option: --app", "older than 2.2"),
    ("Error: No such command 'check'.", "Flask-Migrate is older than 4.0"),
    ("sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) no such function: set_config", "SQLite"),
    ("Error: While importing 'flasky', an ImportError was raised:\n\nTraceback (most recent call last):\n"
     "  File \"flasky.py\", line 1\nModuleNotFoundError: No module named 'psycopg'\n\nError: No such command 'db'.",
     "SQLAlchemy 2.1's default"),
    ("Error: While importing 'flasky', an ImportError was raised:\n\nTraceback (most recent call last):\n"
     "ImportError: cannot import name 'safe_str_cmp' from 'werkzeug.security'\n",
     "importing flasky raised ImportError: ImportError: cannot import name 'safe_str_cmp'"),
])
def test_a_flask_cli_too_old_or_an_app_on_sqlite_is_named_instead_of_blaming_the_migration(output, says):
    flask_db = FlaskDb(SimpleNamespace(app="flasky:app"), "postgresql://x@y/z")
    with pytest.raises(AppNotLoaded) as refused:
        flask_db._refuse_unloaded_app(output)
    assert says in str(refused.value) and "migration" not in refused.value.hint.split("(")[0]


def test_the_migration_helpers_commit_on_sqlalchemy_1_4s_legacy_connection_through_its_dbapi_connection():
    done = []
    legacy = SimpleNamespace(connection=SimpleNamespace(commit=lambda: done.append("dbapi commit"),
                                                        rollback=lambda: done.append("dbapi rollback")))
    runtime._finish(legacy, "commit")
    runtime._finish(legacy, "rollback")
    future = SimpleNamespace(commit=lambda: done.append("commit"))
    runtime._finish(future, "commit")
    assert done == ["dbapi commit", "dbapi rollback", "commit"]


def test_commands_in_a_release_read_no_flaskenv_so_the_migration_sees_the_settings_the_workers_get():
    from deploy.ssh import dbops
    from deploy.ssh.layout import Layout
    ran = []
    fake = SimpleNamespace(run=lambda argv, **kw: ran.append(argv))  # the one seam: the SSH connection
    dbops.flask_db(fake, Layout("/srv/app"), "20260101000000-abc", "flasky:app", "upgrade")
    assert "FLASK_SKIP_DOTENV=1" in ran[0] and ran[0].index("FLASK_SKIP_DOTENV=1") < ran[0].index("-m")


def test_a_pyproject_projects_lock_follows_its_dependencies_when_inv_lock_remakes_it(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "todo"\nversion = "1"\ndependencies = ["itsdangerous>=2"]\n')
    wanted = adopt.requirements_in(tmp_path)
    assert "# also: ../pyproject.toml" in wanted and "gunicorn>=23" in wanted and "itsdangerous" not in wanted
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "app.in").write_text(wanted)
    project = SimpleNamespace(root=tmp_path, lock="requirements/app.lock")
    lock = adopt.relock(project).read_text()
    assert "itsdangerous==" in lock and "gunicorn==" in lock and "--hash=sha256:" in lock
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "todo"\nversion = "1"\n'
                                             'dependencies = ["itsdangerous>=2", "blinker>=1.6"]\n')
    assert "blinker==" in adopt.relock(project).read_text()  # no edit of app.in needed
