"""`kill_children_running` stops exactly this process's children that run the named file."""

import subprocess
import sys

import pytest

from caviar.cluster.reaper import PROC, kill_children_running


@pytest.mark.skipif(not (PROC / "self").exists(), reason="reads /proc (Linux)")
def test_only_the_children_running_the_named_file_are_killed(tmp_path):
    (tmp_path / "pkg").mkdir()
    for name in ("monitor.py", "other.py"):
        (tmp_path / "pkg" / name).write_text("import time\ntime.sleep(60)\n")
    target = subprocess.Popen([sys.executable, str(tmp_path / "pkg" / "monitor.py")])
    bystander = subprocess.Popen([sys.executable, str(tmp_path / "pkg" / "other.py")])
    try:
        assert kill_children_running("pkg/monitor.py") == [target.pid]
        assert target.wait(timeout=10) == -9
        assert bystander.poll() is None
    finally:
        for process in (target, bystander):
            process.kill()
            process.wait()
