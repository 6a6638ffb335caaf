"""`emu-ros run --profile sim_aloha --backend scripted` (both nodes + simulated ALOHA in one process) driven by
EmuClient; the world model's run is test_sim_world_model_client.py.

Server and client each run in their own process (as on a robot), so nothing left over from other
tests in the pytest process can interfere.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gym_aloha")
REPO = Path(__file__).resolve().parents[2]

CLIENT = r'''
import json, sys
from emu_ros.client import EmuClient, TaskResult
c = EmuClient()
out = {"active": c.wait_until_active(60)}
if out["active"]:
    phases = []
    out["accepted"] = c.execute_task("transfer the cube", on_feedback=lambda fb: phases.append(fb.phase))
    out["result"] = c.wait_for_result(120).name
    r = c.get_result_message()
    out.update(success=r.success, replans=r.replans, steps=r.steps_completed, phases=sorted(set(phases)))
    p = c.latest_plan()
    out.update(plan_source=p.source, plan_revision=p.revision)
    out["second_accepted"] = c.execute_task("transfer the cube")
    out["cancel_accepted"] = c.cancel(10)
    out["second_result"] = c.wait_for_result(60).name
out["error"] = list(c.get_task_error())
c.destroy()
print("RESULT " + json.dumps(out))
'''


def test_emu_ros_run_serves_execute_task_to_the_client(tmp_path):
    # A DDS domain of their own: nodes of other tests in this pytest process must not answer for them.
    # (kept in 0..101: higher IDs put Fast DDS's ports in the ephemeral range, see test/launch)
    domain = (int(os.environ.get("ROS_DOMAIN_ID", "0")) + 51) % 102
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), ROS_DOMAIN_ID=str(domain))
    # The server's output goes to a file: a pipe nobody reads while the client runs fills up and
    # blocks the server mid-write (it then answers nothing).
    log = (tmp_path / "server.log").open("w+")
    server = subprocess.Popen([sys.executable, "-m", "emu_ros.cli", "run", "--profile", "sim_aloha",
                               "--backend", "scripted", "--sim-fault", "missed_grasp", "--sim-out", str(tmp_path / "sim")],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        client = subprocess.run([sys.executable, "-c", CLIENT], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=300)
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
    assert lines, client.stdout[-2000:] + client.stderr[-2000:] + server_out[-2000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["active"], (out, server_out[-2000:])
    assert out["accepted"] and out["result"] == "SUCCEEDED", (out, server_out[-2000:])
    assert out["success"] and out["replans"] == 1 and out["steps"] == 6
    assert "replanning" in out["phases"]
    assert out["plan_source"] == "scripted-reference" and out["plan_revision"] == 1
    assert out["second_accepted"] and out["cancel_accepted"] and out["second_result"] == "CANCELED", out
    assert server.returncode == 0, server_out[-3000:]
