"""Scripts that run on the servers, sent over SSH on standard input (`python - ARGS`).

They use only the standard library and psycopg2 from the release's environment,
so the servers need nothing of the toolkit installed.
"""
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def script(name: str) -> str:
    return (FOLDER / f"{name}.py").read_text()
