"""ExecuteTask over real rclpy: goal → feedback carrying a sensor_msgs/Image → result."""
from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image

from emu_ros.action import ExecuteTask


def _image(h=48, w=64) -> Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Image(height=h, width=w, encoding="rgb8", step=w * 3, data=arr.tobytes())


class _Server(Node):
    def __init__(self):
        super().__init__("execute_task_test_server")
        self.server = ActionServer(self, ExecuteTask, "execute_task", self._execute,
                                   goal_callback=lambda g: GoalResponse.ACCEPT,
                                   cancel_callback=lambda g: CancelResponse.ACCEPT,
                                   callback_group=ReentrantCallbackGroup())

    def _execute(self, handle):
        # Discovery of the feedback topic can lag the goal service: wait (bounded) for the subscriber.
        deadline = time.monotonic() + 5.0
        while self.count_subscribers("execute_task/_action/feedback") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(3):
            handle.publish_feedback(ExecuteTask.Feedback(phase="executing", step_index=i,
                                                         step_text=f"step {i}", step_image=_image(), attempt=1))
        handle.succeed()
        return ExecuteTask.Result(success=True, steps_completed=3, replans=0,
                                  message=f"did: {handle.request.instruction}")


def test_execute_task_round_trip(spin, wait_for):
    server = _Server()
    client_node = Node("execute_task_test_client")
    client = ActionClient(client_node, ExecuteTask, "execute_task")
    spin(server)
    spin(client_node, single=True)
    assert client.wait_for_server(timeout_sec=10.0)
    feedback = []
    done = threading.Event()
    result = {}

    def on_result(fut):
        result["r"] = fut.result()
        done.set()

    def on_goal(fut):
        handle = fut.result()
        assert handle.accepted
        handle.get_result_async().add_done_callback(on_result)

    client.send_goal_async(ExecuteTask.Goal(instruction="transfer the cube", max_replans=2),
                           feedback_callback=lambda m: feedback.append(m.feedback)).add_done_callback(on_goal)
    assert done.wait(15.0), "no result within 15 s"
    r = result["r"]
    assert r.status == 4  # GoalStatus.STATUS_SUCCEEDED
    assert r.result.success and r.result.steps_completed == 3 and r.result.message == "did: transfer the cube"
    # rclpy's ActionClient drops feedback it processes after the result: require an ordered,
    # non-empty stream (its tail may be cut), each message carrying the real image.
    assert feedback
    img = feedback[-1].step_image
    arr = np.frombuffer(bytes(img.data), np.uint8).reshape(img.height, img.width, 3)
    assert (arr == np.frombuffer(_image().data, np.uint8).reshape(48, 64, 3)).all()
    idx = [f.step_index for f in feedback]
    assert idx == sorted(set(idx)) and idx[-1] <= 2
