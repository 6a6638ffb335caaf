"""The launch files under the real `launch`/`launch_ros`, driven from outside as a user would.

Each test starts a launch file in its own process (test/launch/launch_file.py does what `ros2 launch`
does) on a DDS domain of its own, and checks it from a second process with plain rclpy: the contract
names, the lifecycle state, the parameter file, /rosout, one ExecuteTask goal, and a clean Ctrl-C.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "test" / "launch" / "launch_file.py"
DIRTY = ("Traceback", "was never retrieved", "Failed to publish", "outlived it", "did not exit")


def env_for(offset: int) -> dict:
    # A domain of its own, kept in 0..101: higher IDs put Fast DDS's ports inside Linux's ephemeral
    # port range (32768+), where they can collide with other sockets of a busy test machine.
    domain = (int(os.environ.get("ROS_DOMAIN_ID", "0")) + offset) % 102
    return dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), ROS_DOMAIN_ID=str(domain),
                PYTHONUNBUFFERED="1")


def start(env: dict, *args: str) -> subprocess.Popen:
    """The launch in its own process group (if it has to be killed, its nodes go with it), its output
    to a file: a pipe nobody reads while the probe runs fills up and blocks the launch mid-write."""
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, str(RUNNER), "emu_ros", *args], cwd=REPO, env=env,
                            stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.output_file = out
    return proc


def output_of(proc: subprocess.Popen) -> str:
    proc.output_file.seek(0)
    return proc.output_file.read()


def interrupt(proc: subprocess.Popen, timeout: float = 90.0) -> str:
    """Ctrl-C as a terminal would send it; the launch must bring its processes down itself (launch
    escalates to SIGTERM/SIGKILL after 5 s each; the margin is for a loaded 2-core CI machine)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
        out = output_of(proc)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launch and every node it started
        proc.wait()
        out = output_of(proc) + "\n[test] launch did not exit within the timeout after SIGINT"
    else:
        try:  # the launch exited: nothing it started may outlive it
            os.killpg(proc.pid, 0)
            leftover = True
        except ProcessLookupError:
            leftover = False
        if leftover:
            os.killpg(proc.pid, signal.SIGKILL)
            out += "\n[test] processes of the launch outlived it"
    return out


def probe(env: dict, script: str, timeout: float = 300.0) -> dict:
    """Run `script` in a fresh process (an outside rclpy client); it prints one `RESULT <json>` line."""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


GRAPH = r'''
import json, sys, time
import rclpy
from rclpy.action import get_action_server_names_and_types_by_node
from rclpy.node import Node
from rcl_interfaces.srv import GetParameters
from rcl_interfaces.msg import Log
from lifecycle_msgs.srv import GetState

rclpy.init()
node = Node("launch_probe")
logs = []
node.create_subscription(Log, "/rosout", logs.append, 1000)
out = {}

def until(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
        if pred():
            return True
    return False

def call(srv_type, name, req, timeout=20.0):
    cli = node.create_client(srv_type, name)
    if not cli.wait_for_service(timeout_sec=timeout):
        return None
    fut = cli.call_async(req)
    until(fut.done, timeout)
    return fut.result()

names = lambda: {("/" + n) if ns == "/" else f"{ns}/{n}" for n, ns in node.get_node_names_and_namespaces()}
until(lambda: {"/emu_guidance", "/emu_bridge"} <= names(), 90)
out["nodes"] = sorted(names())
state = None
end = time.monotonic() + 90
while time.monotonic() < end:
    r = call(GetState, "/emu_guidance/get_state", GetState.Request(), 10)
    state = r.current_state.label if r else None
    if state == "active":
        break
    time.sleep(0.5)
out["guidance_state"] = state
out["bridge_actions"] = sorted(n for n, _ in get_action_server_names_and_types_by_node(node, "emu_bridge", "/"))
out["guidance_actions"] = sorted(n for n, _ in get_action_server_names_and_types_by_node(node, "emu_guidance", "/"))
r = call(GetParameters, "/emu_bridge/get_parameters", GetParameters.Request(names=["max_retries", "profile"]))
out["bridge_params"] = [v.integer_value if v.type == 2 else v.string_value for v in r.values] if r else None
TASK
until(lambda: False, 1.0)
out["rosout"] = [[m.name, int(m.level), m.msg[:200]] for m in logs]
node.destroy_node()
rclpy.try_shutdown()
print("RESULT " + json.dumps(out))
'''

RUN_TASK = r'''
from emu_ros.client import EmuClient
c = EmuClient()  # its own node and executor, as a user script would
out["accepted"] = c.execute_task("transfer the cube", max_replans=-1)
out["result"] = c.wait_for_result(180).name
r = c.get_result_message()
out.update(success=bool(r and r.success), replans=int(r.replans) if r else None)
c.destroy()
'''


def test_sim_launch_runs_a_goal_with_a_replan_and_exits_cleanly(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "config/emu_ros.yaml").read_text().replace("max_retries: 1", "max_retries: 0"))
    env = env_for(31)
    proc = start(env, "sim.launch.py", "fault:=missed_grasp", "use_rviz:=true", f"params_file:={params}")
    try:
        out = probe(env, GRAPH.replace("TASK", RUN_TASK))
    finally:
        log = interrupt(proc)
    detail = (out, log[-4000:])
    # every node under its own contract name (a process-wide name= would make them all /emu_sim)
    assert {"/emu_guidance", "/emu_bridge", "/sim_aloha"} <= set(out["nodes"]), detail
    assert out["guidance_state"] == "active", detail
    assert "/emu_bridge/execute_task" in out["bridge_actions"], detail
    assert "/emu_guidance/generate_plan" in out["guidance_actions"], detail
    assert out["bridge_params"] == [0, "sim_aloha"], detail  # the launch's parameter file reached the node
    assert out["accepted"] and out["result"] == "SUCCEEDED" and out["success"] and out["replans"] >= 1, detail
    runner = [(lvl, msg) for name, lvl, msg in out["rosout"] if name == "emu_bridge" and msg.startswith("[runner]")]
    assert runner and {20, 30} <= {lvl for lvl, _ in runner}, detail  # INFO, and WARN for the re-plan
    assert "rviz2 is not installed" in log, detail  # use_rviz:=true without rviz2: a warning, not an abort
    assert proc.returncode == 0, detail
    assert not [d for d in DIRTY if d in log], detail


def test_aloha_launch_brings_both_nodes_up_and_guidance_active():
    env = env_for(33)
    proc = start(env, "aloha.launch.py")
    try:
        out = probe(env, GRAPH.replace("TASK", ""), timeout=150)
    finally:
        log = interrupt(proc)
    detail = (out, log[-4000:])
    assert {"/emu_guidance", "/emu_bridge"} <= set(out["nodes"]), detail
    assert out["guidance_state"] == "active", detail
    assert "/emu_bridge/execute_task" in out["bridge_actions"], detail
    assert out["bridge_params"] == [1, "aloha"], detail
    assert proc.returncode == 0 and not [d for d in DIRTY if d in log], detail


def test_emu_ros_launch_refuses_the_simulated_profile_before_starting_anything():
    env = env_for(35)
    proc = start(env, "emu_ros.launch.py", "profile:=sim_aloha")
    try:
        proc.wait(timeout=60)
        log = output_of(proc)
    except subprocess.TimeoutExpired:
        log = interrupt(proc)
        pytest.fail(f"the launch kept running with profile:=sim_aloha: {log[-3000:]}")
    assert proc.returncode != 0, log
    assert "sim.launch.py" in log and "simulator" in log, log
    assert "process started" not in log, log  # no node was started
