"""SSH to a stage's hosts: Fabric connections whose host keys are checked against
the stage's known_hosts (never auto-added), commands built from argument
lists, and parallel runs that report every host's outcome.

Fabric's Connection accepts any new host key by default (AutoAddPolicy); here
the client is replaced by one with RejectPolicy and only the stage's keys.
Broken links are noticed in seconds: SSH keepalives plus TCP_USER_TIMEOUT.
"""
from __future__ import annotations

import select
import shlex
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

import paramiko
from fabric import Config, Connection
from paramiko.hostkeys import InvalidHostKey

from .. import interrupts
from ..errors import DeployError
from ..stages import StageConfig, StageHost
from .trace import traced

T = TypeVar("T")
# Every command first reports its process group on stderr (sshd makes each session's
# command a group leader), so that a command the controller gives up on can be stopped.
GROUP_MARK = "flask-deploy-process-group:"
REPORT_GROUP = 'read -r _ _ _ _ g _ </proc/$$/stat; printf "%s%s\\n" "$0" "$g" >&2; exec "$@"'
STOP_SECONDS = 10
STOP_GROUP = ('[ "$1" -gt 1 ] || exit 0; kill -s TERM -- "-$1" 2>/dev/null || exit 0; i=0; '
              'while kill -s 0 -- "-$1" 2>/dev/null; do i=$((i + 1)); '
              f'if [ $i -ge {STOP_SECONDS * 10} ]; then kill -s KILL -- "-$1"; sleep 0.2; exit 0; fi; sleep 0.1; done')
_worker = threading.local()  # on_hosts' workers: `cancel`, set when the main thread gives up
KEEPALIVE_SECONDS = 2
DEAD_LINK_MS = 10_000   # unacknowledged data for this long: the connection is dead
# sshd may send the exit status before the last output (it reaps the child, then drains the
# pipe): the output is whole at the channel's EOF. A child left running with the command's
# output open delays the EOF; once nothing has come for this long, the output so far is taken.
EOF_GRACE_SECONDS = 2


class HostError(DeployError):
    """A host could not be reached, refused us, or a command on it failed."""

    def __init__(self, host: str, message: str, *, hint: str | None = None, output: str = "",
                 exited: int | None = None) -> None:
        super().__init__(f"{host}: {message}", hint=hint)
        self.host = host
        self.output = output
        self.exited = exited  # the command's exit status, when it ran and failed

    @property
    def killed(self) -> bool:
        """The command died of a signal (SSH reports -1; a shell reports 128 + the signal)."""
        return self.exited is not None and (self.exited < 0 or self.exited > 128)


class HostsFailed(DeployError):
    """Some hosts of a parallel run failed; carries every host's outcome (as Fabric's GroupException)."""

    def __init__(self, what: str, results: dict[str, object]) -> None:
        self.results = results
        self.failures = {h: r for h, r in results.items() if isinstance(r, BaseException)}
        lines = [f"{what} failed on {len(self.failures)} of {len(results)} host(s):"]
        lines += [f"  {h}: " + str(e).replace("\n", "\n    ") for h, e in self.failures.items()]
        hints = {e.hint for e in self.failures.values() if isinstance(e, DeployError) and e.hint}
        super().__init__("\n".join(lines), hint="; ".join(sorted(hints)) or None)


@dataclass
class Output:
    stdout: str
    stderr: str
    exited: int


class Remote:
    """One host of a stage, connected on first use."""

    def __init__(self, stage: StageConfig, host: StageHost, user: str | None = None, key: Path | None = None) -> None:
        self.stage, self.host, self.name = stage, host, host.name
        self.conn = Connection(
            host.address, user=user or stage.user, port=host.port, connect_timeout=10,
            config=Config(overrides={"load_ssh_configs": False}),
            connect_kwargs={"key_filename": str(key or stage.key), "look_for_keys": False, "allow_agent": False},
        )
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(stage.known_hosts))
        except (InvalidHostKey, UnicodeDecodeError, OSError) as exc:
            raise DeployError(f"{stage.known_hosts} is not a readable known_hosts file: {exc}",
                              hint="point the stage's known_hosts at the verified keys (ssh-keyscan, checked out "
                                   "of band)") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.conn.client = client

    def open(self) -> None:
        if self.conn.is_connected:
            return
        with interrupts.deferred():  # paramiko is not cut mid-call (see _exec); the connect has its timeouts
            self._connect()
        self.conn.transport.set_keepalive(KEEPALIVE_SECONDS)

    def _connect(self) -> None:
        try:
            sock = socket.create_connection((self.host.address, self.host.port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_LINK_MS)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else delayed ACKs add 40 ms per command
            self.conn.connect_kwargs["sock"] = sock
            self.conn.open()
        except paramiko.BadHostKeyException:
            raise HostError(self.name, f"its host key does not match {self.stage.known_hosts}: refusing to connect "
                            "(the server was replaced, or someone is in the middle)",
                            hint="check the new key out of band, then fix known_hosts") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostError(self.name, f"its host key is not in {self.stage.known_hosts}: refusing to connect",
                                hint="add the verified key to known_hosts (ssh-keyscan, checked out of band)") from None
            raise HostError(self.name, f"SSH failed: {exc}", hint="check the user, key and sshd") from None
        except socket.gaierror as exc:
            raise HostError(self.name, f"its address {self.host.address} does not resolve ({exc.strerror})",
                            hint="check the host's address in the stage (and DNS)") from None
        except OSError as exc:
            raise HostError(self.name, f"unreachable at {self.host.address}:{self.host.port} ({exc})",
                            hint="check the network and that sshd runs") from None

    def run(self, argv: list[str], *, input: str | None = None, check: bool = True,
            timeout: float | None = None, on_stdout: Callable[[bytes], None] | None = None) -> Output:
        """Run `argv` (quoted with shlex.join); raise HostError on failure when `check`.
        `on_stdout` is given the output as it comes (then not kept): a `journalctl --follow`.

        When the controller gives up on it (Ctrl-C, the timeout, a parallel run cancelled),
        the command's whole process group on the host is stopped before this returns:
        nothing keeps running there beside what the controller does next.
        """
        self.open()
        command = shlex.join(argv)
        with traced(self.name, command) as record:
            out = self._exec(command, input, timeout, on_stdout)
            record["exited"] = out.exited
        if check and out.exited != 0:
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-12:])
            raise HostError(self.name, f"`{command}` exited with {out.exited}" + (f":\n{tail}" if tail else ""),
                            output=out.stdout + out.stderr, exited=out.exited)
        return out

    def _exec(self, command: str, input: str | None, timeout: float | None,
              on_stdout: Callable[[bytes], None] | None = None) -> Output:
        """One exec channel: send stdin (a command may exit without reading it), read both streams.

        Ctrl-C is held while paramiko runs and raised between its calls (`_wait`'s polls): the
        command then started is stopped like one interrupted during its run."""
        transport = self.conn.transport
        stdout, stderr = bytearray(), bytearray()
        with interrupts.deferred() as held:
            try:
                channel = transport.open_session(timeout=10)
                channel.exec_command(shlex.join(["sh", "-c", REPORT_GROUP, GROUP_MARK]) + " " + command)
                if input is not None:
                    try:
                        channel.sendall(input.encode())
                    except OSError:
                        pass  # it exited without reading all of it; its exit status says the rest
                channel.shutdown_write()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise HostError(self.name, f"the connection was lost starting `{command}` ({exc})",
                                hint="check the host's network") from None
            try:
                self._wait(channel, command, stdout, stderr, timeout, held, on_stdout)
            except BaseException:  # noqa: B902 - Ctrl-C, the timeout, a cancelled parallel run
                self._stop_group(channel, stderr)
                raise
            if channel.exit_status == -1 and not transport.is_active():  # closed by the connection's end, not the command's
                channel.close()
                raise HostError(self.name, f"the connection was lost while running `{command}`",
                                hint="check the host's network; the command may or may not have finished")
            exited = channel.recv_exit_status()
            channel.close()
        return Output(stdout.decode(errors="replace"), _without_group(stderr).decode(errors="replace"), exited)

    def _wait(self, channel, command: str, stdout: bytearray, stderr: bytearray, timeout: float | None,
              held: interrupts.Held, on_stdout: Callable[[bytes], None] | None = None) -> None:
        transport = self.conn.transport
        deadline = time.monotonic() + timeout if timeout else None
        cancel = getattr(_worker, "cancel", None)
        wait = 0.001
        last_data = time.monotonic()
        while True:
            ended = channel.eof_received or channel.closed  # read before draining: nothing comes after it
            if self._drain(channel, stdout, stderr, on_stdout):
                last_data = time.monotonic()
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                if ended or time.monotonic() - last_data > EOF_GRACE_SECONDS:
                    return
            if not transport.is_active():
                raise HostError(self.name, f"the connection was lost while running `{command}`",
                                hint="check the host's network; the command may or may not have finished")
            if deadline and time.monotonic() > deadline:
                raise HostError(self.name, f"`{command}` did not finish within {timeout:.0f}s; it was stopped")
            if cancel is not None and cancel.is_set():
                raise HostError(self.name, f"`{command}` was stopped: the run on the other hosts was interrupted")
            held.check()
            # Poll soon at first (most commands take milliseconds), then back off.
            select.select([channel], [], [], wait)
            wait = min(wait * 2, 0.05)

    @staticmethod
    def _drain(channel, stdout: bytearray, stderr: bytearray, on_stdout: Callable[[bytes], None] | None) -> bool:
        """Read what has arrived of both streams; True if anything had."""
        got = False
        while channel.recv_ready():
            chunk = channel.recv(1 << 16)
            got = got or bool(chunk)
            if on_stdout is None:
                stdout += chunk
            else:
                on_stdout(chunk)
        while channel.recv_stderr_ready():
            chunk = channel.recv_stderr(1 << 16)
            got = got or bool(chunk)
            stderr += chunk
        return got

    def _stop_group(self, channel, stderr: bytearray) -> None:
        """Stop the command's process group on the host (TERM, then KILL), and wait until it is gone."""
        deadline = time.monotonic() + 5
        while GROUP_MARK.encode() not in stderr and time.monotonic() < deadline and not channel.exit_status_ready():
            if channel.recv_stderr_ready():
                stderr += channel.recv_stderr(1 << 16)
            elif not self.conn.transport.is_active():
                break
            else:
                time.sleep(0.01)
        group = _group_of(stderr)
        if group is None or channel.exit_status_ready() or not self.conn.transport.is_active():
            channel.close()
            return
        try:
            stopper = self.conn.transport.open_session(timeout=10)
            stopper.exec_command(shlex.join(["sh", "-c", STOP_GROUP, "stop", str(group)]))
            deadline = time.monotonic() + STOP_SECONDS + 10
            while not stopper.exit_status_ready() and time.monotonic() < deadline and self.conn.transport.is_active():
                time.sleep(0.05)
            stopper.close()
        except (paramiko.SSHException, OSError, EOFError, TimeoutError):
            pass  # the host went away meanwhile: recover's checks take it from there
        channel.close()

    def put(self, local: str, remote: str) -> None:
        """Upload the file `local` to the path `remote`."""
        self._transfer(f"upload to {remote}", lambda sftp, check: sftp.put(local, remote, callback=check))

    def get(self, remote: str, out: BinaryIO) -> None:
        """Download the file at `remote` into `out`."""
        self._transfer(f"download of {remote}", lambda sftp, check: sftp.getfo(remote, out, callback=check))

    def _transfer(self, what: str, move: Callable[[paramiko.SFTPClient, Callable[[int, int], None]], object]) -> None:
        """One SFTP transfer; Ctrl-C is held while paramiko runs and raised between its chunks."""
        self.open()
        with interrupts.deferred() as held:
            try:
                with traced(self.name, f"({what})"):
                    move(self.conn.sftp(), lambda done, total: held.check())
            except (OSError, paramiko.SSHException) as exc:
                raise HostError(self.name, f"{what} failed: {exc}") from None

    def close(self) -> None:
        self.conn.close()


class StageRemotes:
    """For a verb's context holding `stage` and `remotes`: its migrations host and app hosts."""

    stage: StageConfig
    remotes: dict[str, Remote]

    @property
    def migrator(self) -> Remote:
        return self.remotes[self.stage.migrations_host.name]

    @property
    def backup_remote(self) -> Remote:
        """Where backups are taken and kept (the migrations host unless backups.host names another)."""
        return self.remotes[self.stage.backup_host.name]

    @property
    def apps(self) -> list[Remote]:
        return [self.remotes[h.name] for h in self.stage.app_hosts]


def _group_of(stderr: bytearray) -> int | None:
    mark = GROUP_MARK.encode()
    at = stderr.find(mark)
    if at < 0:
        return None
    digits = stderr[at + len(mark):].split(b"\n", 1)[0].strip()
    return int(digits) if digits.isdigit() else None


def _without_group(stderr: bytearray) -> bytearray:
    """stderr without the group report (its first line)."""
    if stderr.startswith(GROUP_MARK.encode()):
        return stderr.split(b"\n", 1)[1] if b"\n" in stderr else bytearray()
    return stderr


class Connections(dict):
    """The stage's hosts by name, each a Remote, connected when first used; leaving the `with`
    block closes every connection (as Fabric's Connection does), however the block ends."""

    def __enter__(self) -> "Connections":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for remote in self.values():
            remote.close()


def connect(stage: StageConfig, hosts: tuple[StageHost, ...] | None = None) -> Connections:
    """`with connect(stage) as remotes:`, every host of the stage (or `hosts`) by name."""
    return Connections({h.name: Remote(stage, h) for h in (hosts if hosts is not None else stage.hosts)})


def on_hosts(what: str, remotes: list[Remote], work: Callable[[Remote], T]) -> dict[str, T]:
    """`work` on every host at once; every host's outcome, or HostsFailed naming each failure."""
    if not remotes:
        return {}
    results: dict[str, object] = {}
    cancel = threading.Event()

    def on_worker(r: Remote) -> T:
        _worker.cancel = cancel
        try:
            return work(r)
        finally:
            _worker.cancel = None

    with ThreadPoolExecutor(max_workers=min(16, len(remotes))) as pool:
        try:
            futures = {r.name: pool.submit(on_worker, r) for r in remotes}
            for name, future in futures.items():
                try:
                    results[name] = future.result()
                except Exception as exc:  # each host's failure is reported, not just the first
                    results[name] = exc
        except BaseException:  # Ctrl-C: the workers stop their commands on the hosts, then we go on
            cancel.set()
            raise
    if any(isinstance(r, BaseException) for r in results.values()):
        raise HostsFailed(what, results)
    return results  # type: ignore[return-value]
