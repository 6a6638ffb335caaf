"""The core's Python logging reaches /rosout through the node's logger, at every level."""
from __future__ import annotations

import logging

from rcl_interfaces.msg import Log
from rclpy.node import Node

from emu_ros.ros.log_routing import LogRoute


def test_python_records_reach_rosout_with_their_levels_and_routing_is_undone(spin, wait_for):
    node, listener = Node("log_route_host"), Node("log_route_listener")
    got = []
    listener.create_subscription(Log, "/rosout", got.append, 100)
    spin(node, listener)
    route = LogRoute(node, ["emu_ros.testing_route"])
    core = logging.getLogger("emu_ros.testing_route.runner")
    core.info("plan ready")
    core.warning("step unfinished")  # a second severity from the same handler: must not be dropped
    core.error("aborted")
    core.debug("below the node's INFO level")
    mine = lambda: [(m.level, m.msg) for m in got if m.name == "log_route_host"]  # noqa: E731
    assert wait_for(lambda: len(mine()) >= 3, timeout=10)
    assert mine() == [(20, "[runner] plan ready"), (30, "[runner] step unfinished"), (40, "[runner] aborted")]
    route.close()
    assert logging.getLogger("emu_ros.testing_route").propagate and not logging.getLogger("emu_ros.testing_route").handlers
