"""`inv bench`: run the named benchmarks (default: all) and rewrite their sections."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from deploy import console
from deploy.config import ProjectConfig
from deploy.errors import ConfigError

from .backups import bench_backups
from .deploy_time import bench_deploy_time
from .expand_contract import bench_expand_contract
from .predeploy import bench_predeploy
from .rollback import bench_rollback
from .zero_downtime import bench_zero_downtime
from .results import RESULTS, write_section
from .sandbox import bench_sandbox

# Each takes (project, runs) and, when given, size= (its own unit: hosts, MB...).
BENCHMARKS: dict[str, Callable[..., str]] = {
    "sandbox": bench_sandbox,
    "backups": bench_backups,
    "deploy_time": bench_deploy_time,
    "rollback": bench_rollback,
    "zero_downtime": bench_zero_downtime,
    "expand_contract": bench_expand_contract,
    "predeploy": bench_predeploy,
}


def run(project: ProjectConfig, only: str | None = None, runs: int = 5, results: Path = RESULTS,
        size: int | None = None, options: dict | None = None) -> list[str]:
    """`options`: keyword arguments for the benchmark itself (the smoke tests make runs short)."""
    names = [only] if only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ConfigError(f"no benchmark {unknown[0]!r}; choose from: {', '.join(BENCHMARKS)}")
    for name in names:
        console.heading(f"bench {name} ({runs} runs)")
        text = BENCHMARKS[name](project, runs, **({"size": size} if size else {}), **(options or {}))
        write_section(name, text, results)
        console.say(text)
    console.ok(f"wrote {results}")
    return names
