"""Where the manager's cgroups are, read from /proc text; sizes in the manager config."""

from pathlib import Path

import pytest

from mep.monitor.containment import ContainmentError, _component, read_layout
from templates.errors import ConfigError
from templates.fields import Where, byte_size

HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/d1d7
0::/
"""


def test_a_hybrid_host_has_v2_for_containment_and_v1_for_limits():
    layout = read_layout(HYBRID_CGROUP, HYBRID_MOUNTS)
    assert layout.unified == Path("/sys/fs/cgroup/unified")
    assert layout.v1 == {
        "memory": Path("/sys/fs/cgroup/memory/process_api/d1d7"),
        "pids": Path("/sys/fs/cgroup/pids"),
    }


def test_a_systemd_unit_on_a_unified_host():
    mounts = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    cgroup = "0::/system.slice/compute-endpoint@site.service\n"
    layout = read_layout(cgroup, mounts, "cpu memory pids")
    assert layout.unified == Path("/sys/fs/cgroup/system.slice/compute-endpoint@site.service")
    assert layout.unified_controllers == {"cpu", "memory", "pids"}
    assert layout.v1 == {}


def test_a_container_whose_cgroup_mount_shows_a_subtree():
    mounts = "50 40 0:30 /kubepods/pod1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n"
    layout = read_layout("0::/kubepods/pod1/app\n", mounts)
    assert layout.unified == Path("/sys/fs/cgroup/app")


def test_a_v1_only_host_has_no_containment_but_limits():
    mounts = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    layout = read_layout("4:memory:/user.slice\n", mounts)
    assert layout.unified is None and layout.v1 == {
        "memory": Path("/sys/fs/cgroup/memory/user.slice")
    }


def test_nothing_readable_means_no_cgroups():
    layout = read_layout("", "")
    assert layout.unified is None and layout.v1 == {}


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x\0y"])
def test_names_that_cannot_be_one_path_component_are_refused(name):
    with pytest.raises(ContainmentError):
        _component(name)


@pytest.mark.parametrize(
    ("value", "size"),
    [("512M", 512 << 20), ("8G", 8 << 30), ("8Gi", 8 << 30), ("2gb", 2 << 30), (1 << 20, 1 << 20)],
)
def test_sizes(value, size):
    assert byte_size(value, Where("limits.memory_per_user")) == size


@pytest.mark.parametrize("value", ["lots", "1.5G", "-1G", 100, True, "12K"])
def test_bad_sizes_name_the_key(value):
    with pytest.raises(ConfigError, match=r"limits\.memory_per_user"):
        byte_size(value, Where("limits.memory_per_user"))
