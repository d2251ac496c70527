"""Programs the toolkit runs that come with its Python packages (squawk, uv)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ..errors import DeployError


def installed_tool(name: str, purpose: str, package: str) -> str:
    """The path of `name`: beside this Python (its virtualenv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise DeployError(f"{name} is not installed ({purpose})", hint=f"pip install {package}")
    return found
