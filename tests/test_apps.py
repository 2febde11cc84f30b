"""Application naming: rules first (every matcher must match), then cgroup, then other."""

from __future__ import annotations

import pytest

from agent.apps import (
    _DASHBOARD_APP,
    SELF_APP,
    AppNamer,
    ProcessFacts,
    app_from_cgroup,
    parse_cgroup_file,
)
from agent.config import AppRule


def facts(**kw) -> ProcessFacts:
    base = dict(pid=5, comm="python3", cmdline="/usr/bin/python3 train.py", cgroup="/", uid=1000)
    base.update(kw)
    return ProcessFacts(**base)


def test_first_matching_rule_wins_and_all_matchers_must_match() -> None:
    namer = AppNamer(
        (
            AppRule(name="trainer", cmdline=r"train\.py", user="1000"),
            AppRule(name="py", exe="python3"),
        )
    )
    assert namer.name(facts()) == "trainer"
    assert namer.name(facts(uid=0)) == "py"  # user differs: first rule does not match
    assert namer.name(facts(comm="bash", cmdline="bash")) == "other"


def test_exe_matches_argv0_basename_or_comm() -> None:
    namer = AppNamer((AppRule(name="pg", exe="postgres"),))
    assert namer.name(facts(comm="postgres", cmdline="postgres: checkpointer")) == "pg"
    assert namer.name(facts(comm="x", cmdline="/usr/lib/postgresql/15/bin/postgres -D /d")) == "pg"


def test_cgroup_glob_and_user_name() -> None:
    namer = AppNamer(
        (
            AppRule(name="batch", cgroup="/system.slice/batch-*.service"),
            AppRule(name="rootstuff", user="root"),
        )
    )
    assert namer.name(facts(cgroup="/system.slice/batch-7.service")) == "batch"
    assert namer.name(facts(uid=0)) == "rootstuff"


@pytest.mark.parametrize(
    ("path", "app"),
    [
        ("/system.slice/nginx.service", "nginx"),
        ("/system.slice/docker-0123456789abcdef0123456789abcdef.scope", "container-0123456789ab"),
        (
            "/kubepods.slice/kubepods-burstable.slice/cri-containerd-"
            "aabbccddeeff00112233445566778899.scope",
            "container-aabbccddeeff",
        ),
        ("/docker/" + "f" * 64, "container-ffffffffffff"),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", "foo"),
        ("/user.slice/user-1000.slice/user@1000.service/init.scope", None),
        ("/user.slice/user-1000.slice/session-3.scope", None),
        ("/system.slice/system-getty.slice/getty@tty1.service", "getty_tty1"),
        ("/", None),
    ],
)
def test_app_from_cgroup(path: str, app: str | None) -> None:
    assert app_from_cgroup(path) == app


def test_parse_cgroup_file_prefers_v2_then_systemd() -> None:
    assert parse_cgroup_file("0::/system.slice/a.service\n") == "/system.slice/a.service"
    v1 = "12:cpu,cpuacct:/x\n1:name=systemd:/system.slice/b.service\n"
    assert parse_cgroup_file(v1) == "/system.slice/b.service"
    hybrid = "1:name=systemd:/\n0::/\n4:memory:/process_api/abc\n"
    assert parse_cgroup_file(hybrid) == "/process_api/abc"


@pytest.mark.parametrize(
    "cmdline",
    [
        "/opt/sci-agent/venv/bin/python /opt/sci-agent/venv/bin/sci-agent --config c.toml run",
        "/usr/bin/python3 -m agent run",
        "sci-agent dashboard",
        f"/usr/bin/python3 -m streamlit run {_DASHBOARD_APP} --server.port 8501",
    ],
)
def test_the_agent_and_its_dashboard_are_always_sci_agent(cmdline: str) -> None:
    catch_all = (AppRule(name="py", exe="python3"), AppRule(name="all", cmdline="."))
    assert AppNamer(catch_all).name(facts(cmdline=cmdline, comm="python3")) == SELF_APP


def test_other_python_modules_are_not_the_agent() -> None:
    namer = AppNamer()
    for cmdline in ("/usr/bin/python3 -m agents run", "python3 myagent.py", "sci-agentx run"):
        assert namer.name(facts(cmdline=cmdline, comm="python3")) != SELF_APP
