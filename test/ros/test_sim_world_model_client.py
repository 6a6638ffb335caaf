"""An outside rclpy client on `emu-ros run --profile sim_aloha` with the shipped world model planning.

Cancel a task mid-execution, start the same task again: the world model plans from the scene the cancel left
(not from step 1) and the task succeeds; `/sim_aloha/reset` refuses while a task runs, then gives a fresh scene
on the next seed, where the task succeeds again. Server and client are separate processes, as on a robot.
"""
from __future__ import annotations

import pytest
from sim_server import run_server_and_client

pytest.importorskip("gym_aloha")
pytest.importorskip("torch")

CLIENT = r'''
import json, threading, time
import rclpy
from std_srvs.srv import Trigger
from emu_ros.client import EmuClient, TaskResult

def reset(cli):
    assert cli.wait_for_service(timeout_sec=30)
    fut = cli.call_async(Trigger.Request())
    end = time.monotonic() + 60
    while not fut.done() and time.monotonic() < end:
        time.sleep(0.05)
    r = fut.result()
    return [bool(r.success), r.message] if r else None

c = EmuClient()
out = {"active": c.wait_until_active(90)}
node = rclpy.create_node("outside_reset_client")
cli = node.create_client(Trigger, "/sim_aloha/reset")  # before spinning: rclpy#1589
ex = rclpy.executors.SingleThreadedExecutor()
ex.add_node(node)
threading.Thread(target=ex.spin, daemon=True).start()
started = threading.Event()
def on_fb(fb):
    if fb.phase == "executing" and fb.step_index >= 2:
        started.set()
out["accepted"] = c.execute_task("transfer the cube", on_feedback=on_fb)
started.wait(180)
out["reset_while_running"] = reset(cli)
out["cancel_accepted"] = c.cancel(10)
out["first_result"] = c.wait_for_result(60).name
r = c.get_result_message()
out["first_steps"] = int(r.steps_completed) if r else None
out["again_accepted"] = c.execute_task("transfer the cube")
out["again_result"] = c.wait_for_result(240).name
r = c.get_result_message()
out["again_success"], out["again_steps"] = bool(r and r.success), int(r.steps_completed) if r else None
p = c.latest_plan()
out["again_plan"] = [s.text for s in p.steps] if p else None
out["plan_source"] = p.source if p else None
out["reset"] = reset(cli)
out["fresh_accepted"] = c.execute_task("transfer the cube")
out["fresh_result"] = c.wait_for_result(240).name
r = c.get_result_message()
out["fresh_success"], out["fresh_steps"] = bool(r and r.success), int(r.steps_completed) if r else None
c.destroy()
node.destroy_node()
print("RESULT " + json.dumps(out))
'''


def test_cancel_then_the_same_task_again_from_the_scene_then_reset(tmp_path):
    out, server_out, returncode = run_server_and_client(tmp_path, ["--sim-seed", "1500"], CLIENT, domain_offset=57,
                                                        timeout=600)
    detail = (out, server_out[-3000:])
    assert out["active"] and out["accepted"], detail
    assert out["reset_while_running"][0] is False and "task is running" in out["reset_while_running"][1], detail
    assert out["cancel_accepted"] and out["first_result"] == "CANCELED", detail
    # the same task again: planned from the scene the cancel left, so it does not start at the first step
    assert out["again_result"] == "SUCCEEDED" and out["again_success"], detail
    assert out["plan_source"] == "emu35-dida", detail
    assert out["again_steps"] < 6, detail
    assert out["reset"] is not None and out["reset"][0] is True and "seed 1501" in out["reset"][1], detail
    assert out["fresh_result"] == "SUCCEEDED" and out["fresh_success"], detail
    assert returncode == 0, server_out[-3000:]
