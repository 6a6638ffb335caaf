"""`emu-ros run --profile sim_aloha --backend scripted` (both nodes + simulated ALOHA in one process) driven by
EmuClient; the world model's run is test_sim_world_model_client.py.

Server and client each run in their own process (as on a robot), so nothing left over from other
tests in the pytest process can interfere.
"""
from __future__ import annotations

import pytest
from sim_server import run_server_and_client

pytest.importorskip("gym_aloha")

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
    out, server_out, returncode = run_server_and_client(
        tmp_path, ["--backend", "scripted", "--sim-fault", "missed_grasp"], CLIENT, domain_offset=51)
    assert out["active"], (out, server_out[-2000:])
    assert out["accepted"] and out["result"] == "SUCCEEDED", (out, server_out[-2000:])
    assert out["success"] and out["replans"] == 1 and out["steps"] == 6
    assert "replanning" in out["phases"]
    assert out["plan_source"] == "scripted-reference" and out["plan_revision"] == 1
    assert out["second_accepted"] and out["cancel_accepted"] and out["second_result"] == "CANCELED", out
    assert returncode == 0, server_out[-3000:]
