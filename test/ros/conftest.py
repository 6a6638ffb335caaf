"""rclpy fixtures: one rclpy context per test session, executors spun in background threads."""
from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

import os

try:
    import rclpy  # noqa: F401
    from emu_ros.action import ExecuteTask  # noqa: F401
    from emu_ros.msg import Plan  # noqa: F401
except Exception as e:  # noqa: BLE001 - any import failure means "not built"
    _msg = f"rclpy/emu_ros interfaces unavailable ({type(e).__name__}: {e}); run scripts/setup_env.sh and source activate.sh"
    if os.environ.get("EMU_ROS_REQUIRE_ROS") == "1":
        raise RuntimeError(_msg) from e
    import pytest as _pytest

    _pytest.skip(_msg, allow_module_level=True)

import rclpy  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402

from emu_ros.ros.node_utils import shutdown_executor  # noqa: E402


@pytest.fixture(scope="session")
def ros_context():
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def spin(ros_context):
    """Spin the given nodes in a background MultiThreadedExecutor; stopped and destroyed after the test."""
    executors = []

    def _spin(*nodes, single: bool = False):
        # Clients get a single-threaded executor: rclpy's ActionClient can drop feedback when its
        # waitable is taken by several executor threads at once.
        ex = SingleThreadedExecutor() if single else MultiThreadedExecutor(num_threads=4)
        for n in nodes:
            ex.add_node(n)
        stop = threading.Event()

        def loop():
            # spin_once until told to stop, so teardown never shuts the executor down under a running
            # spin (a MultiThreadedExecutor then raises "cannot schedule new futures after shutdown")
            while not stop.is_set() and rclpy.ok():
                ex.spin_once(timeout_sec=0.05)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        executors.append((ex, t, stop, nodes))
        return ex

    yield _spin
    for ex, t, stop, nodes in executors:
        stop.set()
    for ex, t, stop, nodes in executors:
        t.join(timeout=5.0)
        shutdown_executor(ex, timeout_sec=2.0)
        for n in nodes:
            n.destroy_node()


@pytest.fixture
def wait_for():
    """Poll a predicate until true or timeout (tests only; nodes never busy-wait)."""
    return _wait_for


def _wait_for(pred: Callable[[], bool], timeout: float = 10.0, period: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(period)
    return pred()
