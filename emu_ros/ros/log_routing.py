"""Python `logging` from the ROS-free core, delivered through a node's rclpy logger.

The core (runner, monitor, skills, engine, simulator) logs with the standard `logging` module so it
runs without ROS. Inside a node those records would come out bare on stderr and never reach
`/rosout`; routing them through the node's logger gives them the node's name, ROS levels and
timestamps, `--log-level` filtering and `/rosout` (rqt_console, `ros2 topic echo /rosout`).
"""
from __future__ import annotations

import logging
from typing import Sequence

from rclpy.logging import LoggingSeverity

_FROM_ROS = {LoggingSeverity.DEBUG: logging.DEBUG, LoggingSeverity.INFO: logging.INFO,
             LoggingSeverity.WARN: logging.WARNING, LoggingSeverity.ERROR: logging.ERROR,
             LoggingSeverity.FATAL: logging.CRITICAL}


class NodeLogHandler(logging.Handler):
    """Forwards each record to `node.get_logger()` at the matching severity, prefixed by its module."""

    def __init__(self, node):
        super().__init__()
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        # One call site per severity: rclpy keys its per-call-site logging state by the caller's line
        # and refuses a severity change there (ValueError), which would drop every other level.
        try:
            text = f"[{record.name.rsplit('.', 1)[-1]}] {self.format(record)}"
            level = record.levelno
            if level >= logging.CRITICAL:
                self._logger.fatal(text)
            elif level >= logging.ERROR:
                self._logger.error(text)
            elif level >= logging.WARNING:
                self._logger.warning(text)
            elif level >= logging.INFO:
                self._logger.info(text)
            else:
                self._logger.debug(text)
        except Exception:  # noqa: BLE001 - logging must never raise into the robot's task
            self.handleError(record)


class LogRoute:
    """Routes the named Python loggers into a node until `close()` (call it in destroy_node)."""

    def __init__(self, node, logger_names: Sequence[str]):
        self.handler = NodeLogHandler(node)
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        level = _FROM_ROS.get(LoggingSeverity(node.get_logger().get_effective_level()), logging.INFO)
        self.loggers = [logging.getLogger(n) for n in logger_names]
        self._saved = [(lg.level, lg.propagate) for lg in self.loggers]
        for lg in self.loggers:
            lg.addHandler(self.handler)
            lg.setLevel(level)
            lg.propagate = False  # not a second, bare copy on stderr through the root logger

    def close(self) -> None:
        for lg, (level, propagate) in zip(self.loggers, self._saved):
            lg.removeHandler(self.handler)
            lg.setLevel(level)
            lg.propagate = propagate
        self.loggers = []
