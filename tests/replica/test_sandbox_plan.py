"""The sandbox plan (computed by the gateway): what is covered, what is bound back, and how."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hydro_serving.errors import ConfigError
from hydro_serving.replica.sandbox import OFF, UID, USERNS, Plan, make_plan, sandbox_mode, uid_range


def test_uid_mode_covers_what_the_uid_cannot_traverse_and_binds_back_what_it_needs(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "python" / "lib").mkdir(parents=True)
    (tmp_path / "public" / "pkg").mkdir(parents=True)
    state = tmp_path / "state"
    (state / "functions" / "f" / "home").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(private, 0o700)
    os.chmod(state, 0o700)
    readable = [str(private / "python"), str(private / "python" / "lib"), str(tmp_path / "public" / "pkg"),
                str(state / "functions" / "f")]
    plan = make_plan(UID, uid=800001, gid=800001, hidden=[str(state)], readable=readable,
                     writable=[str(state / "functions" / "f" / "home")])
    # pytest's own base folder may already be closed to others (0700): then it is the one cover
    closed = [p for p in [*reversed(tmp_path.parents), tmp_path] if not os.stat(p).st_mode & 0o001]
    assert set(plan.cover) == ({str(closed[0])} if closed else {str(private), str(state)})
    expected = [(str(private / "python"), False),  # python/lib comes with it
                (str(state / "functions" / "f"), False),
                (str(state / "functions" / "f" / "home"), True)]  # writable inside a read-only bind: its own mount
    if closed:  # the public folder is under the cover too, so it is bound back
        expected.insert(0, (str(tmp_path / "public" / "pkg"), False))
    assert sorted(plan.binds) == sorted(expected)
    assert Plan.from_dict(plan.to_dict()) == plan


def test_a_link_is_bound_at_its_path_and_at_its_target(tmp_path: Path) -> None:
    (tmp_path / "hidden" / "real").mkdir(parents=True)
    (tmp_path / "hidden" / "link").symlink_to(tmp_path / "hidden" / "real")
    plan = make_plan(USERNS, hidden=[str(tmp_path / "hidden")], readable=[str(tmp_path / "hidden" / "link")])
    hidden = tmp_path / "hidden"
    assert sorted(plan.binds) == [(str(hidden / "link"), False), (str(hidden / "real"), False)]


def test_a_cover_inside_another_is_one_cover(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    plan = make_plan(USERNS, hidden=[str(tmp_path / "a"), str(tmp_path / "a" / "b")])
    assert plan.cover == (str(tmp_path / "a"),) and plan.binds == ()


def test_off_does_nothing() -> None:
    assert make_plan(OFF, hidden=["/tmp"], readable=["/usr"]) == Plan(OFF)


def test_modes_and_uid_ranges_are_parsed_strictly() -> None:
    assert sandbox_mode({"HYDRO_SANDBOX": "off"}) == OFF
    assert sandbox_mode({}) == (UID if os.geteuid() == 0 else USERNS)
    with pytest.raises(ConfigError) as info:
        sandbox_mode({"HYDRO_SANDBOX": "chroot"})
    assert info.value.field == "HYDRO_SANDBOX"
    assert uid_range({}) == (800000, 865535)
    assert uid_range({"HYDRO_REPLICA_UIDS": "900000-900009"}) == (900000, 900009)
    for bad in ("0-10", "x", "10-5", "500-600"):
        with pytest.raises(ConfigError):
            uid_range({"HYDRO_REPLICA_UIDS": bad})
