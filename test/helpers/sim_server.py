"""`emu-ros run --profile sim_aloha` in one process and an outside client script in another, as on a robot.

Each pair gets a DDS domain of its own (nodes of other tests in the pytest process must not answer for them;
kept in 0..101: higher IDs put Fast DDS's ports in the ephemeral range, see test/launch). The server's output
goes to a file: a pipe nobody reads while the client runs fills up and blocks the server mid-write.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_server_and_client(tmp_path: Path, server_args: list, client_code: str, domain_offset: int,
                          timeout: float = 300) -> tuple:
    """Start the server, run the client to its end, stop the server with Ctrl-C.

    Returns (the client's RESULT dict, the server's output, the server's exit code); asserts a RESULT came."""
    domain = (int(os.environ.get("ROS_DOMAIN_ID", "0")) + domain_offset) % 102
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), ROS_DOMAIN_ID=str(domain))
    log = (tmp_path / "server.log").open("w+")
    server = subprocess.Popen([sys.executable, "-m", "emu_ros.cli", "run", "--profile", "sim_aloha",
                               "--sim-out", str(tmp_path / "sim"), *server_args],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        client = subprocess.run([sys.executable, "-c", client_code], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=timeout)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.seek(0)
        server_out = log.read()
        log.close()
    lines = [ln for ln in client.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, client.stdout[-2000:] + client.stderr[-3000:] + server_out[-3000:]
    return json.loads(lines[-1][len("RESULT "):]), server_out, server.returncode
