"""The load balancer's runtime API as the deploy drives it, against HAProxy's own answers
(recorded from the sandbox's HAProxy 2.6): one seam, the SSH command, is faked."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from deploy.errors import DeployError
from deploy.ssh import balancer
from deploy.ssh.connection import Output
from deploy.rolling import batches
from deploy.stages import LoadBalancer, StageHost

LB = LoadBalancer(StageHost("lb", "10.0.0.9", ("lb",)), "/run/haproxy/admin.sock", "app", {}, 1.0)
STAT_HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
               "status,weight,act,bck,chkfail,chkdown")
STATE_HEADER = ("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
                "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state\n")


def stat(**servers: tuple[str, int]) -> str:
    """`show stat` with each server's (status, open sessions)."""
    rows = [f"app,{name},0,0,{scur},0,,0,0,0,,0,,0,0,0,0,{status},1,1,0,0,0" for name, (status, scur) in servers.items()]
    return "\n".join([STAT_HEADER, "users,FRONTEND,,,0,0,9979,0,0,0,0,0,0,,,,,OPEN,,,,,", *rows,
                      "app,BACKEND,0,0,0,0,998,0,0,0,0,0,,0,0,0,0,UP,2,2,0,,0"]) + "\n"


@dataclass
class FakeLb:
    """HAProxy's answers by command; every command sent is kept."""

    answers: dict[str, list[str]]
    sent: list[str] = field(default_factory=list)
    name: str = "lb"

    def run(self, argv: list[str], check: bool = True) -> Output:
        command = argv[-1]
        self.sent.append(command)
        queue = self.answers.get(command.split(" app")[0] if command.startswith("show servers") else command, [""])
        return Output(queue.pop(0) if len(queue) > 1 else queue[0], "", 0)


def test_the_last_host_in_rotation_is_never_drained():
    lb = FakeLb({"show stat": [stat(app1=("UP", 3), app2=("DOWN", 0))]})
    assert balancer.drain(lb, LB, "app1") is False
    assert not [c for c in lb.sent if c.startswith("set server")]


def test_a_drain_waits_for_the_open_requests_to_finish():
    lb = FakeLb({"show stat": [stat(app1=("UP", 2), app2=("UP", 0)), stat(app1=("DRAIN", 1), app2=("UP", 0)),
                               stat(app1=("DRAIN", 0), app2=("UP", 0))]})
    assert balancer.drain(lb, LB, "app1") is True
    assert lb.sent == ["show stat", "set server app/app1 state drain", "show stat", "show stat"]


def test_undrain_puts_back_a_drained_host_even_when_its_check_says_down():
    rows = "3 app 1 app1 10.0.0.11 0 8 1 1 5 15 3 3 6\n3 app 2 app2 10.0.0.12 2 0 1 1 5 15 3 3 6\n"
    lb = FakeLb({"show servers state": [STATE_HEADER + rows]})
    assert balancer.undrain_all(lb, LB, ["app1", "app2"]) == ["app1"]
    assert lb.sent[-1] == "set server app/app1 state ready"


def test_preflight_refuses_a_host_the_load_balancer_does_not_know_or_does_not_check():
    with pytest.raises(DeployError, match="has no server for app3"):
        balancer.check_servers(FakeLb({"show stat": [stat(app1=("UP", 0))]}), LB, ["app1", "app3"])
    with pytest.raises(DeployError, match="does not health-check app2"):
        balancer.check_servers(FakeLb({"show stat": [stat(app1=("UP", 0), app2=("no check", 0))]}), LB, ["app1", "app2"])


@dataclass
class Hosts:
    """What `batches` reads of a deploy."""

    apps: list[str]
    batch: int
    lb: LoadBalancer | None

    @property
    def stage(self):
        return self


@pytest.mark.parametrize("apps, batch, lb, restarts, expected", [
    (4, 0, None, False, [4]),          # reloads: all at once
    (4, 0, None, True, [1, 1, 1, 1]),  # restarts: one at a time
    (4, 3, None, True, [3, 1]),
    (4, 4, LB, True, [3, 1]),          # never every host out at once
    (2, 0, LB, False, [2]),
    (2, 2, LB, False, [1, 1]),         # drained batches leave one serving
    (1, 0, LB, True, [1]),             # one host: nothing else can serve (it is not drained)
    (0, 0, LB, False, []),             # an undo with nothing to switch back
])
def test_batches_never_take_every_host_out_at_once(apps, batch, lb, restarts, expected):
    hosts = [f"app{i}" for i in range(1, apps + 1)]
    assert [len(b) for b in batches(Hosts(hosts, batch, lb), hosts, restarts)] == expected
