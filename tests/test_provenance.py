"""Provenance outside a git checkout: recorded as unknown, never an error."""

from __future__ import annotations

from detect.engine.provenance import git_state


def test_a_folder_without_git_gives_unknown_commit(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_a_dirty_checkout_is_flagged(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one")
    git("add", "a.txt")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "first")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "a.txt").write_text("two")
    assert git_state(tmp_path) == {"commit": clean["commit"], "dirty": True}
