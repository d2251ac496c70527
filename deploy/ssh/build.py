"""Building a release on a host while the old one keeps serving: fetch into the
mirror, export the commit, link the shared files, and give it a Python
environment from uploaded wheels (the servers never reach a package index).
An environment is keyed by the lock file's hash, so a deploy that changes no
dependency installs nothing. Last, the release's app must load, as its workers will
load it."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import DeployError
from ..wheels import SERVER_LOCK
from . import dbops
from .connection import Remote
from .layout import Layout

BASH = ["bash", "-c"]


def server_python(remote: Remote) -> tuple[str, str]:
    """(X.Y, machine) of the host's python3, for choosing wheels."""
    out = remote.run(["python3", "-c", "import platform, sys; print('%d.%d' % sys.version_info[:2], platform.machine())"])
    version, machine = out.stdout.split()
    return version, machine


HOST_FACTS = """root=$1 env=$2
for p in "$root" "$env"; do [ -e "$p" ] || echo "missing $p"; done
echo "python $(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
python3 -c 'import ensurepip, venv' 2>/dev/null && echo "venv yes"
echo "git $(git --version 2>/dev/null | cut -d' ' -f3)"
[ -d "$root" ] || exit 0
echo "free $(df --output=avail -m "$root" | tail -n 1)"
echo "current $(readlink "$root/current")"
"""
MIN_PYTHON = (3, 10)  # the oldest python3 of a supported Debian or Ubuntu release (docs/deploying.md: Supported servers)


def host_facts(remote: Remote, layout: Layout) -> dict:
    """In one command: the deploy folder's missing paths, its free MB, the current release, and
    the versions preflight requires (python3 with its venv module, git)."""
    facts: dict = {"missing": [], "free": None, "current": None, "python": "", "venv": False, "git": ""}
    for line in remote.run(["sh", "-c", HOST_FACTS, "facts", layout.root, layout.env_file]).stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "missing":
            facts["missing"].append(value)
        elif key == "free":
            facts["free"] = int(value)
        elif key == "current" and value:
            facts["current"] = value.rsplit("/", 1)[-1]
        elif key in ("python", "git"):
            facts[key] = value.strip()
        elif key == "venv":
            facts["venv"] = True
    return facts


def unsupported(facts: dict) -> list[str]:
    """What the host lacks to build and run a release, each with the Debian/Ubuntu package to install."""
    problems = []
    version = tuple(int(x) for x in facts["python"].split(".")) if facts["python"] else ()
    if not version:
        problems.append("python3 is missing (apt install python3)")
    elif version < MIN_PYTHON:
        problems.append(f"python3 is {facts['python']}; at least {'.'.join(map(str, MIN_PYTHON))} is needed "
                        "(a supported Debian or Ubuntu release has it)")
    elif not facts["venv"]:
        problems.append(f"python3 {facts['python']} has no venv/ensurepip module (apt install python3-venv)")
    if not facts["git"]:
        problems.append("git is missing (apt install git)")
    return problems


def fetch_and_export(remote: Remote, layout: Layout, repo_url: str, commit: str, release_id: str) -> None:
    script = """set -euo pipefail
repo=$1 url=$2 commit=$3 dest=$4
[ -d "$repo" ] || git init --quiet --bare "$repo"
git -C "$repo" fetch --quiet --prune -- "$url" '+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*'
git -C "$repo" cat-file -e "$commit^{commit}"
rm -rf "$dest"
mkdir -p "$dest"
git -C "$repo" archive --format=tar "$commit" | tar -x -C "$dest"
"""
    remote.run([*BASH, script, "export", layout.repo, repo_url, commit, layout.release(release_id)])


def environment_ready(remote: Remote, layout: Layout, digest: str) -> bool:
    return remote.run(["test", "-f", f"{layout.venv(digest)}/.complete"], check=False).exited == 0


def install_environment(remote: Remote, layout: Layout, digest: str, wheels_tar: Path) -> None:
    """Upload the wheels and their lock (unless there) and make the environment from them, offline.
    --no-deps: the lock is complete, and pip's resolver would refuse one in which a package asks
    for another with extras (requests[socks]) under --require-hashes."""
    wheels = layout.wheels(digest)
    if remote.run(["test", "-f", f"{wheels}/.complete"], check=False).exited != 0:
        remote.run(["mkdir", "-p", wheels])
        remote.put(str(wheels_tar), f"{wheels}/wheels.tar")
        remote.run([*BASH, 'cd "$1" && tar -xf wheels.tar && rm wheels.tar && touch .complete', "unpack", wheels])
    script = """set -euo pipefail
venv=$1 wheels=$2 lock=$3
rm -rf "$venv"
nice -n 10 python3 -m venv "$venv"
nice -n 10 "$venv/bin/pip" install --quiet --disable-pip-version-check --no-index --find-links "$wheels" \\
    --no-deps --require-hashes -r "$wheels/$lock"
touch "$venv/.complete"
"""
    remote.run([*BASH, script, "venv", layout.venv(digest), wheels, SERVER_LOCK], timeout=600)


FINISH = """import json, os, sys
dest, digest, release_id, meta = sys.argv[1:5]
for link, target in ((".venv", "../../shared/venvs/" + digest), (".env", "../../shared/env")):
    if os.path.lexists(os.path.join(dest, link)):
        os.unlink(os.path.join(dest, link))
    os.symlink(target, os.path.join(dest, link))
files = json.load(sys.stdin)
files.update({"RELEASE": release_id + "\\n", ".release.json": meta + "\\n"})
for name, text in files.items():
    path = os.path.join(dest, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
"""


def finish_release(remote: Remote, layout: Layout, release_id: str, digest: str, meta: dict,
                   files: dict[str, str]) -> None:
    """Link the environment and the shared env file; add the toolkit's `files` (the app's side
    of the contract, under .deploy/); record the release's facts."""
    remote.run(["python3", "-c", FINISH, layout.release(release_id), digest, release_id, json.dumps(meta)],
               input=json.dumps(files))


def check_boot(remote: Remote, layout: Layout, release_id: str, gunicorn_config: str,
               env_file: str | None = None) -> None:
    """The release's app loads, as its workers will load it (`gunicorn --check-config` imports
    it with the release's config and environment, or `env_file`'s): a release (or an env) that
    cannot boot is refused before any host uses it, instead of stopping the service on the reload."""
    argv = [".venv/bin/python", "-m", "gunicorn", "--check-config", "--config", gunicorn_config]
    out = dbops.in_release(remote, layout, release_id, argv, check=False, timeout=120, env_file=env_file)
    if out.exited != 0:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-6:])
        raise DeployError(f"{remote.name}: release {release_id} cannot boot (gunicorn --check-config "
                          f"exited {out.exited}):\n{tail}",
                          hint="a setting it needs at start? fab env.set KEY=VALUE (every host; the servers "
                               "read no .flaskenv or .env: set what those hold too) and deploy again; else run the "
                               "app locally "
                               "(flask --app ... run) to see the error, fix, commit, push, deploy again")


def set_status(remote: Remote, layout: Layout, release_id: str, status: str) -> None:
    """Mark a release good or failed in its .release.json (failed ones never count as kept)."""
    script = """import json, sys
path, status = sys.argv[1:3]
try:
    meta = json.load(open(path))
except (OSError, ValueError):
    meta = {}
meta["status"] = status
open(path, "w").write(json.dumps(meta) + "\\n")
"""
    remote.run(["python3", "-c", script, layout.status_file(release_id), status])


def list_releases(remote: Remote, layout: Layout) -> list[dict]:
    """Every release folder with its recorded facts, oldest first."""
    script = """import json, os, sys
root = sys.argv[1]
out = []
for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    try:
        meta = json.load(open(os.path.join(root, name, ".release.json")))
    except (OSError, ValueError):
        meta = {"status": "unknown"}
    meta["id"] = name
    out.append(meta)
print(json.dumps(out))
"""
    return json.loads(remote.run(["python3", "-c", script, layout.releases]).stdout)
