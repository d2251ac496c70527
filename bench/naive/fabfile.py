"""The alternative a user has today, for the deploy-time benchmark: a hand-written
fabfile that deploys one host after another by pulling into one checkout, installing
the requirements, migrating and restarting. No release folders, no health check, no
rollback, no lock. Run as `fab -S SSH_CONFIG -H app1,app2 deploy` (Fabric runs the
task for each host in turn); /srv/app/naive is a clone that `current` points at."""
from fabric import task

CHECKOUT = "/srv/app/naive"


@task
def deploy(c):
    with c.cd(CHECKOUT):
        c.run("git pull --quiet --ff-only origin main")
        c.run(".venv/bin/pip install --quiet --disable-pip-version-check --no-index --find-links wheels "
              "-r requirements/app.lock")
        c.run("set -a && . ./.env && set +a && PYTHONPATH=.deploy .venv/bin/flask --app app:create_app db upgrade")
    c.run("sudo -n systemctl restart app.service")
