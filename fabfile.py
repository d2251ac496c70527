"""Remote half of the workflow: `fab --list`. The tasks are the toolkit's (deploy/fab_tasks.py)."""
from deploy.fab_tasks import ns  # noqa: F401
