#!/usr/bin/env bash
# The main job: bring up the sandbox fleet (Debian hosts booted with systemd: app
# hosts, a PostgreSQL host and an HAProxy load balancer, on this machine), deploy
# this checkout's HEAD to it, and show the stage.
# Then start the local database the migration workflow uses. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
if [[ $(id -u) -ne 0 ]]; then
    echo "the sandbox needs root (it boots containers with systemd-nspawn): run ./dev demo as root" >&2
    exit 1
fi
step inv sandbox.up
step fab setup
step fab deploy
step fab status
step inv db.up
step inv upgrade
cat <<NEXT

Deployed. Users reach it through the load balancer (try: curl http://10.213.0.9/boards); each app
host serves the release on port 8000 (curl http://10.213.0.11:8000/healthz), and
ssh -F .local/sandbox/ssh_config app1 logs you in as the deploy user. Next:
  1. change a model in app/models.py (add a column, say)
  2. ./dev inv migrate -m "add cards.due_on"   # writes the revision, prints its SQL and lint
  3. ./dev inv upgrade && ./dev inv commit     # applies it locally; commits after \`inv check\`
  4. git push .local/sandbox/origin.git HEAD:main && ./dev fab deploy
     # backs up, migrates once, switches both hosts, checks /healthz; undoes all of it on failure
  5. ./dev fab releases; ./dev fab status      # what is where
  6. ./dev fab backup; ./dev fab backups.check # a backup, then its checks (exit 0/1/2, as the timer runs them)
NEXT
