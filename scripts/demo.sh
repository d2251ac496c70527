#!/usr/bin/env bash
# The main job until the deploy lands: bring up the local database, apply the
# migrations, and run the checks a migration must pass before it is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step inv db.up
step inv upgrade
step inv current
step inv history
step inv check
cat <<'NEXT'

The local half of the workflow is ready. Try it:
  1. change a model in app/models.py (add a column, say)
  2. ./dev inv migrate -m "add cards.due_on"   # writes the revision, prints its SQL and lint
  3. ./dev inv upgrade                         # applies it to the local database
  4. ./dev inv commit                          # runs `inv check`, then commits migration + model
NEXT
