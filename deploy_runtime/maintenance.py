"""Maintenance mode, in front of the app: while `fab maintenance.on` has left its flag in the
stage's shared folder, every request but the health and liveness answers gets a 503 with the
maintenance page and Retry-After. The flag is outside any release, so the mode survives
deploys and reloads until `fab maintenance.off` removes it.

The flag (maintenance.json: retry_after, since) and the page (maintenance.html) are read
again only when the flag's file changes: one stat per request.
"""
from __future__ import annotations

import json
import os

from .environment import shared_folder

FLAG, PAGE = "maintenance.json", "maintenance.html"
DEFAULT_PAGE = (b"<!doctype html><html><head><meta charset=\"utf-8\"><title>Down for maintenance</title></head>"
                b"<body><h1>Down for maintenance</h1><p>We will be back shortly.</p></body></html>\n")


class Maintenance:
    """Whether maintenance is on, and its answer; cached by the flag file's identity."""

    def __init__(self, folder: str | None = None) -> None:
        self.folder = folder if folder is not None else shared_folder()
        self._seen: tuple | None = None
        self._state: dict | None = None

    def state(self) -> dict | None:
        """The flag's settings while maintenance is on, else None."""
        if not self.folder:
            return None
        try:
            st = os.stat(os.path.join(self.folder, FLAG))
        except OSError:
            self._seen = self._state = None
            return None
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if identity != self._seen:
            self._seen, self._state = identity, self._load()
        return self._state

    def _load(self) -> dict:
        try:
            with open(os.path.join(self.folder, FLAG), encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {}
        try:
            with open(os.path.join(self.folder, PAGE), "rb") as f:
                page = f.read()
        except OSError:
            page = DEFAULT_PAGE
        retry = state.get("retry_after")
        return {"since": state.get("since"), "retry_after": retry if isinstance(retry, int) and retry > 0 else 300,
                "page": page}

    def answer(self, state: dict, environ, start_response):
        start_response("503 Service Unavailable", [
            ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(state["page"]))),
            ("Retry-After", str(state["retry_after"])), ("Cache-Control", "no-store")])
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [state["page"]]
