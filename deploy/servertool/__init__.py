"""Scripts that run on the servers with the system python3 and the standard library
only, so the servers need nothing of the toolkit installed beforehand.

`fab` sends them with each use (BOOT writes any that changed into deploy_to/tools/,
then runs the tool): the copy the systemd timers run is the one fab last used.
"""
import json
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
MODULES = ("envfile.py", "pgenv.py", "digests.py", "dumps.py", "retention.py", "checks.py", "reports.py", "unwritten.py", "locks.py",
           "pgbr.py", "pgbr_checks.py", "backup_tool.py")
ENTRY = "backup_tool.py"

BOOT = """import json, os, runpy, sys
folder = sys.argv[1]
os.makedirs(folder, exist_ok=True)
for name, text in json.load(sys.stdin).items():
    path = os.path.join(folder, name)
    try:
        same = open(path).read() == text
    except OSError:
        same = False
    if not same:
        with open(path + ".new", "w") as f:
            f.write(text)
        os.chmod(path + ".new", 0o644)
        os.replace(path + ".new", path)
sys.path.insert(0, folder)
sys.argv = [os.path.join(folder, sys.argv[2])] + sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def sources() -> str:
    """The tool's modules as the JSON document BOOT reads on its standard input."""
    return json.dumps({name: (FOLDER / name).read_text() for name in MODULES})
