"""The same search on a running Ray cluster: a head and a second node on 127.0.0.1, started with `ray start`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(temp_dir: str) -> None:
    """Stop only this cluster's processes (`ray stop` would also stop the test session's Ray)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore")
            except OSError:
                continue
            if temp_dir in command:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _hidden(path: Path) -> list[str]:
    """A command prefix giving the command its own mount namespace with an empty tmpfs over `path`: a node
    started with it cannot see what the head writes there, as a node without a mount would. Empty where mount
    namespaces are not allowed (no root, or a container without CAP_SYS_ADMIN)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        return []
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(path)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(address, env, a folder only the head sees or None where that cannot be arranged); one cluster for the
    module's tests, as a lab's cluster serves one run after another."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    temp_dir = f"/tmp/kdh{os.getpid()}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": temp_dir}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    start = [str(RAY), "start", "--num-gpus", "0", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats"]
    try:
        # The head, where the driver runs, has no CPU for trials: every trial must run on the second node.
        subprocess.run([*start, "--head", "--num-cpus", "0", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--temp-dir", temp_dir, "--include-dashboard", "false"], env=env, check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        head_only = tmp_path / "head_only"
        head_only.mkdir()
        hide = _hidden(head_only)
        subprocess.run([*hide, *start, "--num-cpus", "2", "--address", address, "--node-ip-address", "127.0.0.1"],
                       env=env, check=True, capture_output=True, timeout=120)  # fmt: skip
        yield address, env, head_only if hide else None
    finally:
        _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_search_runs_across_two_nodes(cluster, tmp_path, service_data):
    """The driver on the head, its trials on the second node (the only one with CPUs): they import the project and
    read the dataset where that node sees them, and write their checkpoints to the shared storage."""
    address, env, _ = cluster
    storage = tmp_path / "shared"
    command = [sys.executable, "search/run.py", "--space", "kd", "--address", address, "--storage", str(storage),
               "--name", "cluster", "--subsets", "5,10", "--samples", "1"]  # fmt: skip
    command += ["--data", str(service_data)]
    for setting in ["epochs=1", "batch_size=50", "compare_without_kd=false", "confirm_top_k=0", "kd_lambda=1.0"]:
        command += ["--set", setting]
    space = tmp_path / "lr_only.yaml"
    space.write_text("system: asc_kd\nsearch:\n  subset: [5, 10]\n  lr: {low: 0.002, high: 0.02, log: true}\n")
    command[command.index("kd")] = str(space)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "shared by all 2 nodes" in result.stdout
    assert "2 CPUs" in result.stdout
    board = pd.read_csv(storage / "cluster" / "leaderboard.csv", dtype={"trial_id": str})
    assert sorted(board["subset"]) == [5, 10] and (board["status"] == "complete").all()
    for trial_dir in board["trial_dir"]:
        assert list(Path(trial_dir).glob("checkpoint_*")), "written by a trial on the second node"


def test_a_storage_one_node_cannot_see_is_refused(cluster, tmp_path, service_data):
    address, env, head_only = cluster
    if head_only is None:
        pytest.skip("mount namespaces (unshare -m) are not allowed here")
    storage = head_only / "runs"
    space = tmp_path / "lr_only.yaml"  # no teacher to train before the storage is checked
    space.write_text("system: asc_kd\nkd_lambda: 1.0\nsearch:\n  subset: [5]\n  lr: {low: 0.002, high: 0.02}\n")
    command = [sys.executable, "search/run.py", "--space", str(space), "--address", address, "--storage", str(storage),
               "--data", str(service_data)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--storage {storage} is not shared" in result.stderr and "Traceback" not in result.stderr
    assert not (storage / "lr_only" / "search").exists(), "refused before any trial ran"


def test_an_impossible_request_is_refused_at_start(cluster, tmp_path, service_data):
    address, env, _ = cluster
    command = [sys.executable, "search/run.py", "--space", "kd", "--address", address, "--storage", str(tmp_path),
               "--gpus-per-trial", "0.25", "--subsets", "5", "--data", str(service_data)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
    assert result.returncode == 2
    assert "GPUs" in result.stderr and "Traceback" not in result.stderr
