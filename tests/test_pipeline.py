"""The engine alone, in-process: every step that was started ends undone or reported
failed, whatever Ctrl-Cs arrive during the undo; a commit that returned is never undone."""
from __future__ import annotations

import os
import signal

import pytest

from deploy import pipeline
from deploy.pipeline import DeployFailed, Step


def ctrl_c() -> None:
    """A real SIGINT to this process, as a terminal sends on Ctrl-C."""
    os.kill(os.getpid(), signal.SIGINT)


class Recorder:
    """Steps that log what ran; `fail_at` raises, `interrupt_undo` sends Ctrl-Cs inside an undo."""

    def __init__(self, fail_at: str, interrupt_undo: dict[str, int] | None = None) -> None:
        self.log: list[str] = []
        self.fail_at, self.interrupt_undo = fail_at, interrupt_undo or {}

    def steps(self, names: list[str]) -> list[Step]:
        return [Step(n, lambda ctx, n=n: self.do(n), lambda ctx, n=n: self.undo(n)) for n in names]

    def do(self, name: str) -> None:
        self.log.append(f"do {name}")
        if name == self.fail_at:
            raise RuntimeError(f"{name} broke")

    def undo(self, name: str) -> None:
        for _ in range(self.interrupt_undo.get(name, 0)):
            ctrl_c()
        self.log.append(f"undo {name}")


NAMES = ["build", "migrate", "switch", "finish"]


def test_a_failure_undoes_every_started_step_in_reverse():
    rec = Recorder("switch")
    with pytest.raises(DeployFailed) as failed:
        pipeline.run(rec.steps(NAMES), None)
    assert rec.log == ["do build", "do migrate", "do switch", "undo switch", "undo migrate", "undo build"]
    assert failed.value.outcome.undone == ["switch", "migrate", "build"]
    assert "step 'switch' failed: RuntimeError: switch broke" in str(failed.value)


@pytest.mark.parametrize("presses", [1, 2, 3, 5])
def test_ctrl_c_pressed_repeatedly_during_an_undo_never_leaves_a_step_neither_undone_nor_failed(presses):
    rec = Recorder("switch", {"switch": presses, "migrate": presses})
    with pytest.raises(DeployFailed) as failed:
        pipeline.run(rec.steps(NAMES), None)
    outcome = failed.value.outcome
    assert outcome.undone == ["switch", "migrate", "build"], outcome
    assert outcome.undo_failures == []
    assert rec.log[-3:] == ["undo switch", "undo migrate", "undo build"]


def test_an_undo_that_is_interrupted_outside_the_signal_handler_is_reported_as_not_undone():
    def undo_interrupted(ctx):
        raise KeyboardInterrupt  # as from a thread that cannot hold Ctrl-C back

    steps = [Step("build", lambda c: None, undo_interrupted), Step("switch", lambda c: 1 / 0, lambda c: None)]
    with pytest.raises(DeployFailed) as failed:
        pipeline.run(steps, None)
    assert failed.value.outcome.undone == ["switch"]
    assert failed.value.outcome.undo_failures == ["build: interrupted (Ctrl-C)"]
    assert "NOT undone: build: interrupted (Ctrl-C)" in str(failed.value)


def test_ctrl_c_during_a_step_undoes_it_and_exits_130():
    steps = [Step("build", lambda c: None, lambda c: None), Step("migrate", lambda c: ctrl_c(), lambda c: None)]
    with pytest.raises(DeployFailed) as failed:
        pipeline.run(steps, None)
    assert failed.value.exit_code == 130 and failed.value.outcome.undone == ["migrate", "build"]


def test_ctrl_c_during_the_commit_is_held_back_and_nothing_is_undone():
    rec = Recorder("")
    committed = []

    def commit(ctx):
        ctrl_c()
        ctrl_c()
        committed.append(True)

    outcome = pipeline.run(rec.steps(NAMES), None, commit=commit)
    ctrl_c()  # after the commit, until the caller is done: still held
    assert committed == [True] and outcome.release_interrupts()
    assert not [line for line in rec.log if line.startswith("undo")], rec.log
    assert outcome.done == NAMES
    with pytest.raises(KeyboardInterrupt):  # released: Ctrl-C acts again
        ctrl_c()


def test_a_commit_that_fails_undoes_everything():
    rec = Recorder("")

    def commit(ctx):
        raise OSError("the journal could not be written")

    with pytest.raises(DeployFailed) as failed:
        pipeline.run(rec.steps(NAMES), None, commit=commit)
    assert failed.value.outcome.undone == ["finish", "switch", "migrate", "build"]


def test_ctrl_c_in_the_hook_after_the_last_step_is_undone_not_lost():
    rec = Recorder("")

    def on_event(event, step):
        if (event, step) == ("done", "finish"):
            ctrl_c()

    with pytest.raises(DeployFailed) as failed:
        pipeline.run(rec.steps(NAMES), None, on_event, commit=lambda ctx: None)
    assert failed.value.outcome.undone == ["finish", "switch", "migrate", "build"]  # finish undone once


def test_each_operations_journal_record_reads_back_as_the_same_operation():
    """What `fab recover` rebuilds from the journal is the operation that was journaled."""
    from types import SimpleNamespace

    from deploy.restore import Restore
    from deploy.rollback import Rollback
    from deploy.steps import Deploy

    stage = SimpleNamespace(deploy_to="/srv/app", name="s")
    progress = {"holder": {"id": "h1"}, "reached": "switch"}
    deploy = Deploy(None, stage, {}, "main", 0, release_id="20261124-abc", commit="c0ffee", app="notes:app",
                    head="h2", digest="d1", db_before="h1", previous={"app1": "r0"}, migrated=True,
                    backup={"id": "b1"}, migration_xids=[7], **progress)
    rollback = Rollback(stage, {}, deploy.layout, requested=None, source="r2", target="r1", app="notes:app",
                        db_now="h2", target_revision="h1", backup={"id": "b2"}, moved=True, mover="r2", **progress)
    restore = Restore(stage, {}, deploy.layout, "20261124000000-manual", release="r1", **progress)
    for op, read_back in ((deploy, lambda r: Deploy.from_record(None, stage, {}, r)),
                          (rollback, lambda r: Rollback.from_record(stage, {}, r)),
                          (restore, lambda r: Restore.from_record(stage, {}, r))):
        record = {**op.to_record(), **progress}
        again = read_back(record)
        assert again.to_record() == op.to_record()
        assert (again.holder, again.reached) == (op.holder, op.reached)
