"""Local half of the workflow: `inv --list`. The tasks are the toolkit's (deploy/inv_tasks.py),
plus this repository's benchmarks."""
from bench import runner as bench_runner
from deploy.config import load_project
from deploy.errors import ConfigError
from deploy.inv_tasks import ns
from deploy.tasking import task


@task(help={"only": "one benchmark (default: all)", "runs": "repetitions of each (default 5)",
            "size": "the benchmark's size: app hosts for sandbox (2), MB of database for backups (1000)"})
def bench(c, only=None, runs=5, size=None):
    """Run the benchmarks and rewrite bench/RESULTS.md."""
    for option, value in (("--runs", runs), ("--size", size)):
        if value is not None and not str(value).isdigit():
            raise ConfigError(f"{option} must be a whole number, got {value!r}")
    bench_runner.run(load_project(), only, int(runs), size=int(size) if size else None)


ns.add_task(bench)
