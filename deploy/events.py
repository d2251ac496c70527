"""What a deploy, rollback or recovery is, as data for the stage's webhooks (notify.py) and
hooks (hooks.py, as FLASK_DEPLOY_* variables): never a secret, only names and ids."""
from __future__ import annotations

import getpass


def event(action: str, stage, outcome: str | None = None, error: str | None = None,
          duration: float | None = None, **facts) -> dict:
    return {"action": action, "stage": stage.name, "hosts": [h.name for h in stage.app_hosts],
            "user": getpass.getuser(), "outcome": outcome, "error": error,
            "duration_seconds": round(duration, 3) if duration is not None else None, **facts}


def of_deploy(d, outcome: str | None = None, error: str | None = None, duration: float | None = None) -> dict:
    return event("deploy", d.stage, outcome, error, duration, release=d.release_id, commit=d.commit, ref=d.ref,
                 revisions=[r.id for r in d.pending])
