"""The server layout under `deploy_to` (Capistrano's, plus the database's bits):

    releases/<id>/     one exported commit each; .venv -> shared/venvs/<lock hash>
    current            -> releases/<id>, switched by renaming a new link over it
    shared/env         the 0600 secrets file (DATABASE_URL...), never in a release
    shared/venvs/      Python environments, one per app.lock hash, shared by releases
    shared/wheels/     the wheels they were installed from (no package index needed)
    repo/              a bare git mirror of the stage's repository
    backups/           database backups (0700; files 0600) and check-history.jsonl
    tools/             the backup tool the timers and fab run (deploy/servertool, refreshed by each use)
    deploy.log         one JSON line per deploy or rollback
    .lock/             the stage's deploy lock (on the migrations host), holder.json inside
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    root: str

    @property
    def releases(self) -> str:
        return f"{self.root}/releases"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"

    @property
    def current(self) -> str:
        return f"{self.root}/current"

    @property
    def shared(self) -> str:
        return f"{self.root}/shared"

    @property
    def env_file(self) -> str:
        return f"{self.shared}/env"

    def venv(self, lock_hash: str) -> str:
        return f"{self.shared}/venvs/{lock_hash}"

    def wheels(self, lock_hash: str) -> str:
        return f"{self.shared}/wheels/{lock_hash}"

    @property
    def repo(self) -> str:
        return f"{self.root}/repo"

    @property
    def backups(self) -> str:
        return f"{self.root}/backups"

    @property
    def tools(self) -> str:
        return f"{self.root}/tools"

    @property
    def log(self) -> str:
        return f"{self.root}/deploy.log"

    @property
    def lock(self) -> str:
        return f"{self.root}/.lock"

    @property
    def journal(self) -> str:
        return f"{self.root}/.journal.json"

    def status_file(self, release_id: str) -> str:
        return f"{self.release(release_id)}/.release.json"
