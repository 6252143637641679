"""Containment detection and cgroup file writes, against fake /proc and cgroup trees in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_responder.jobs.containment import (
    STRATEGIES, CgroupCell, HostView, cgroup_places, data_dir_tag, delegated_cgroups, kill_only_cgroups,
    parse_mountinfo, parse_proc_cgroup,
)
from server_responder.settings import Settings, SettingsError, default_job_memory_max

HYBRID_CGROUP = """9:name=systemd:/
8:pids:/
4:memory:/process_api/e6df48e7
1:cpu,cpuacct:/
0::/
"""
PURE_V2_CGROUP = "0::/system.slice/server-responder.service\n"


def mountinfo(root: Path, hybrid: bool) -> str:
    if not hybrid:
        return (f"22 1 0:21 / / rw - ext4 /dev/vda1 rw\n"
                f"30 22 0:26 / {root}/sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    return "\n".join([
        f"31 23 0:28 / {root}/sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
        f"32 31 0:29 / {root}/sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
        f"35 31 0:32 / {root}/sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
        f"39 31 0:36 / {root}/sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids",
        f"41 31 0:38 / {root}/sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
        # A bind mount of a cgroup's subdirectory is not a hierarchy's root.
        f"50 31 0:32 /inner {root}/elsewhere rw - cgroup cgroup rw,memory",
    ]) + "\n"


def view(tmp_path: Path, cgroup: str, hybrid: bool, pid: int = 4242) -> HostView:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo(tmp_path, hybrid))
    return HostView(proc / "cgroup", proc / "mountinfo", pid)


def settings(tmp_path: Path, **values) -> Settings:
    return Settings.from_mapping({"data_dir": str(tmp_path / "data"), "log_dir": str(tmp_path / "logs"), **values})


def test_proc_cgroup_lines_give_each_controller_and_the_unified_path():
    paths = parse_proc_cgroup(HYBRID_CGROUP)
    assert paths[""] == "/"
    assert paths["memory"] == "/process_api/e6df48e7"
    assert paths["cpu"] == paths["cpuacct"] == "/"
    assert paths["name=systemd"] == "/"
    assert parse_proc_cgroup(PURE_V2_CGROUP) == {"": "/system.slice/server-responder.service"}


def test_mountinfo_finds_the_cgroup2_mount_and_v1_controllers(tmp_path):
    unified, v1 = parse_mountinfo(mountinfo(tmp_path, hybrid=True))
    assert unified == tmp_path / "sys/fs/cgroup/unified"
    assert v1 == {"cpu": tmp_path / "sys/fs/cgroup/cpu,cpuacct", "memory": tmp_path / "sys/fs/cgroup/memory",
                  "pids": tmp_path / "sys/fs/cgroup/pids"}
    assert parse_mountinfo(mountinfo(tmp_path, hybrid=False)) == (tmp_path / "sys/fs/cgroup", {})


def test_own_places_join_mounts_and_paths(tmp_path):
    places = cgroup_places(view(tmp_path, HYBRID_CGROUP, hybrid=True))
    assert places.unified_dir == tmp_path / "sys/fs/cgroup/unified"
    assert places.v1["memory"] == tmp_path / "sys/fs/cgroup/memory/process_api/e6df48e7"
    places = cgroup_places(view(tmp_path, PURE_V2_CGROUP, hybrid=False))
    assert places.unified_dir == tmp_path / "sys/fs/cgroup/system.slice/server-responder.service"


def delegated_tree(tmp_path: Path, controllers: str = "cpuset cpu io memory hugetlb pids rdma misc",
                   procs: str = "4242\n") -> Path:
    own = tmp_path / "sys/fs/cgroup/system.slice/server-responder.service"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text(controllers + "\n")
    (own / "cgroup.subtree_control").write_text("")
    (own / "cgroup.procs").write_text(procs)
    return own


def test_a_delegated_cgroup_moves_the_service_to_a_leaf_and_enables_controllers_for_jobs(tmp_path):
    own = delegated_tree(tmp_path)
    strategy = delegated_cgroups(settings(tmp_path, job_memory_max=64 << 20, job_pids_max=100, job_cpu_weight=20),
                                 view(tmp_path, PURE_V2_CGROUP, hybrid=False))
    assert strategy is not None and strategy.kind == "cgroup2"
    assert (own / "service/cgroup.procs").read_text() == "4242"
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (own / "jobs/cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert strategy.limits_in_force() == {"memory_max": 64 << 20, "pids_max": 100, "cpu_weight": 20}
    job_dir = own / "jobs/abc"
    job_dir.mkdir()
    (job_dir / "memory.swap.max").write_text("max\n")
    cell = strategy.job("abc")
    assert (job_dir / "memory.max").read_text() == str(64 << 20)
    assert (job_dir / "memory.swap.max").read_text() == "0"
    assert (job_dir / "pids.max").read_text() == "100"
    assert (job_dir / "cpu.weight").read_text() == "20"
    (job_dir / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    (job_dir / "memory.peak").write_text("67108864\n")
    stats = cell.stats()
    assert stats.oom_killed is True and stats.peak_memory_bytes == 67108864


def test_no_limit_means_no_limit_file_and_only_available_controllers(tmp_path):
    own = delegated_tree(tmp_path, controllers="cpu pids")
    strategy = delegated_cgroups(settings(tmp_path, job_memory_max=0, job_pids_max=0),
                                 view(tmp_path, PURE_V2_CGROUP, hybrid=False))
    assert (own / "cgroup.subtree_control").read_text() == "+pids +cpu"
    assert strategy.limits_in_force() == {"cpu_weight": 50}
    strategy.job("abc")
    assert sorted(path.name for path in (own / "jobs/abc").iterdir()) == ["cpu.weight"]


def test_a_delegated_cgroup_without_controllers_keeps_the_layout_for_kill_only(tmp_path):
    # What a systemd-nspawn container on a host with cgroup v1 controllers delegates: cgroup.kill, no limits.
    own = delegated_tree(tmp_path, controllers="")
    strategy = delegated_cgroups(settings(tmp_path), view(tmp_path, PURE_V2_CGROUP, hybrid=False))
    assert strategy is not None and strategy.kind == "cgroup2"
    assert (own / "service/cgroup.procs").read_text() == "4242"
    assert (own / "cgroup.subtree_control").read_text() == ""
    assert strategy.limits_in_force() == {}
    strategy.job("abc")
    assert sorted(path.name for path in (own / "jobs/abc").iterdir()) == []


@pytest.mark.parametrize("cgroup, controllers, procs", [
    ("0::/\n", "memory pids", "4242\n"),                      # the root cgroup: never delegated
    (PURE_V2_CGROUP, "memory pids", "4242\n4243\n"),         # others in the cgroup
])
def test_delegation_is_not_used_where_it_would_not_hold(tmp_path, cgroup, controllers, procs):
    own = delegated_tree(tmp_path, controllers=controllers, procs=procs)
    assert delegated_cgroups(settings(tmp_path), view(tmp_path, cgroup, hybrid=False)) is None
    assert not (own / "service").exists()


def test_kill_only_cgroups_are_named_by_data_dir_and_take_limits_from_v1(tmp_path):
    unified = tmp_path / "sys/fs/cgroup/unified"
    memory = tmp_path / "sys/fs/cgroup/memory/process_api/e6df48e7"
    pids = tmp_path / "sys/fs/cgroup/pids"
    for directory in (unified, memory, pids):
        directory.mkdir(parents=True)
    service_settings = settings(tmp_path, job_memory_max=64 << 20, job_pids_max=64)
    tag = data_dir_tag(service_settings.data_dir)
    for directory in (unified, memory, pids):
        # A real cgroupfs makes these with the directory.
        (directory / tag).mkdir()
        (directory / tag / "cgroup.procs").write_text("")
    strategy = kill_only_cgroups(service_settings, view(tmp_path, HYBRID_CGROUP, hybrid=True))
    assert strategy is not None and strategy.kind == "cgroup2-kill+v1-limits"
    assert set(strategy.v1_parents) == {"memory", "pids"}
    assert strategy.limits_in_force() == {"memory_max": 64 << 20, "pids_max": 64}
    (memory / tag / "memory.memsw.limit_in_bytes").write_text("")  # swap accounting: the parent has it too
    cell = strategy.job("j1")
    assert isinstance(cell, CgroupCell) and cell.unified == unified / tag / "j1"
    assert (memory / tag / "j1/memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (memory / tag / "j1/memory.memsw.limit_in_bytes").read_text() == str(64 << 20)
    assert (pids / tag / "j1/pids.max").read_text() == "64"
    (memory / tag / "j1/memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (memory / tag / "j1/memory.max_usage_in_bytes").write_text("1234\n")
    assert cell.stats().oom_killed and cell.stats().peak_memory_bytes == 1234


def test_two_data_dirs_never_share_a_tag_and_one_always_gets_the_same(tmp_path):
    assert data_dir_tag(tmp_path / "a") != data_dir_tag(tmp_path / "b")
    assert data_dir_tag(tmp_path / "a") == data_dir_tag(tmp_path / "a" / ".." / "a")


def test_strategies_are_tried_best_first():
    assert [name for name, _ in STRATEGIES] == ["cgroup2", "cgroup2-kill", "subreaper"]


def test_limit_settings_are_validated_and_default_to_three_quarters_of_memory(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        2000000 kB\nMemFree: 1 kB\n")
    assert default_job_memory_max(meminfo) == 2000000 * 1024 * 3 // 4
    assert default_job_memory_max(tmp_path / "missing") == 0
    defaults = settings(tmp_path)
    assert defaults.job_pids_max == 512 and defaults.job_cpu_weight == 50
    assert defaults.job_memory_max == default_job_memory_max()
    for key, value in (("job_cpu_weight", 0), ("job_cpu_weight", 10001), ("job_pids_max", 3),
                       ("job_memory_max", 1000), ("job_user", "root")):
        with pytest.raises(SettingsError, match=key):
            settings(tmp_path, **{key: value})
    assert settings(tmp_path, job_memory_max=0, job_pids_max=0).job_memory_max == 0


def test_a_root_service_never_runs_jobs_as_root():
    from server_responder.jobs.runner import UNPRIVILEGED_USER, job_user_for

    chosen = job_user_for("", 0)
    assert chosen is not None and chosen.uid != 0
    assert chosen.name in ("server-responder-job", UNPRIVILEGED_USER)
    assert job_user_for("", 1000) is None
    assert job_user_for("nobody", 1000).name == "nobody"
