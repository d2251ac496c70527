"""The app's side of the deploy contract, so that the app itself needs no code for it.

Shipped into every release (as `.deploy/deploy_runtime/`, beside the gunicorn config the
toolkit writes there) and installed with the toolkit for local work:

- `wsgi.serve`: loads the app as `flask --app` does and answers the health and liveness
  paths itself (`health`);
- `reloads`: gunicorn hooks that keep a reload from stalling a request;
- `migrations.migration_connection`: the advisory lock and timeouts for `env.py`.

Standard library, Flask, SQLAlchemy and Alembic only: what a Flask-Migrate app has.
"""
