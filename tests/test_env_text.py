"""The env file changed key by key (deploy/env_text.py) and read again by a reloading gunicorn
master (deploy_runtime/environment.py), both through the toolkit's one parser."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.env_text import REWRITTEN, assignment, changes, edited, parse_pairs, scrub
from deploy.errors import ConfigError
from deploy.servertool import envfile

ODD_VALUES = ["", " lead", "trail ", "q\"uo'te", "back\\slash", "$HOME `x` ${y}", "multi\nline\n", "#hash ;semi",
              "tab\there", "ü€", "a\\\nb", "cr\r\n", "'single'", '"double"', "=", "\\"]
FILE = "# the app's settings\nDATABASE_URL=postgres://u:p@db/app\n\n; a note\nSECRET_KEY='s3cr3t'\n"


@pytest.mark.parametrize("value", ODD_VALUES)
def test_every_value_written_reads_back_exactly(value):
    new = edited(FILE, {"SECRET_KEY": value, "NEW_ONE": value}, set())
    assert envfile.parse(new) == {"DATABASE_URL": "postgres://u:p@db/app", "SECRET_KEY": value, "NEW_ONE": value}


def test_comments_and_order_are_kept_a_set_key_stays_in_place_and_an_unset_one_goes():
    new = edited(FILE, {"SECRET_KEY": "rotated", "MAIL_HOST": "smtp"}, {"DATABASE_URL"})
    assert new == "# the app's settings\n\n; a note\nSECRET_KEY=\"rotated\"\nMAIL_HOST=\"smtp\"\n"


def test_a_key_assigned_twice_is_set_once_and_the_later_copy_removed():
    new = edited("A=1\nB=2\nA=3\n", {"A": "x"}, set())
    assert new == 'A="x"\nB=2\n'


def test_a_file_whose_value_spans_lines_is_written_out_anew_with_the_same_values():
    text = "A='one\nB=not a key'\nC=3\\\n4\n"
    assert envfile.parse(text) == {"A": "one\nB=not a key", "C": "34"}
    new = edited(text, {"B": "real"}, set())
    assert envfile.parse(new) == {"A": "one\nB=not a key", "C": "34", "B": "real"}
    assert new.startswith(REWRITTEN)


def test_bad_names_and_nul_are_refused_with_a_message():
    with pytest.raises(ConfigError, match="not an environment variable name"):
        assignment("1ABC", "x")
    with pytest.raises(ConfigError, match="NUL"):
        assignment("A", "x\0y")
    with pytest.raises(ConfigError, match="no KEY=VALUE"):
        parse_pairs("# only a comment\n")


def test_changes_name_keys_only():
    assert changes("A=1\nB=2\n", "B=3\nC=4\n") == {"added": ["C"], "changed": ["B"], "removed": ["A"]}


REFRESH = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from deploy_runtime.environment import refresh_environment
refresh_environment()
first = {k: os.environ.get(k) for k in ("A", "B", "KEPT")}
open(os.environ["DEPLOY_ENV_FILE"], "w").write(sys.argv[2])
refresh_environment()
print(json.dumps([first, {k: os.environ.get(k) for k in ("A", "B", "KEPT", "BIND")}, os.environ["DEPLOY_ENV_DIGEST"]]))
"""


def test_a_reloading_master_takes_the_file_as_it_is_now_and_drops_removed_keys_but_not_the_unit_s(tmp_path: Path):
    env_file = tmp_path / "env"
    env_file.write_text("A=1\nB='two words'\nBIND=0.0.0.0:9000\n")
    (tmp_path / "env.key").write_text("k" * 64 + "\n")
    second = 'A="changed"\n'
    env = dict(os.environ, DEPLOY_ENV_FILE=str(env_file), KEPT="from the unit")
    out = subprocess.run([sys.executable, "-c", REFRESH, str(Path(__file__).resolve().parents[1]), second],
                         env=env, capture_output=True, text=True, check=True).stdout
    first, after, mark = json.loads(out)
    assert first == {"A": "1", "B": "two words", "KEPT": "from the unit"}
    assert after == {"A": "changed", "B": None, "KEPT": "from the unit", "BIND": "0.0.0.0:9000"}, \
        "a key the unit sets (BIND) is never dropped by a reload"
    assert mark == hmac.new(b"k" * 64, second.encode(), hashlib.sha256).hexdigest()[:16]


def test_a_change_that_changes_nothing_leaves_the_text_as_it_is_even_with_a_value_spanning_lines():
    text = '# db\nA="x\nB=1\n"\n# keep me\nC=2\n'
    assert edited(text, {}, {"B"}) == text and edited(text, {"C": "2"}, set()) == text


def test_values_are_scrubbed_from_an_app_error_longest_first():
    message = "could not parse 'postgresql//app:s3cret-pw@db/app' (password s3cret-pw) at x"
    assert scrub(message, {"postgresql//app:s3cret-pw@db/app", "s3cret-pw", "x"}) == \
        "could not parse '***' (password ***) at x"
