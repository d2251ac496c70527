"""A deploy toolkit for Flask + PostgreSQL apps whose schema Alembic manages.

The toolkit never imports the app it deploys: the app is an artifact named in
`deploy.toml`, run in subprocesses (`flask db ...`) with its own environment.
"""
