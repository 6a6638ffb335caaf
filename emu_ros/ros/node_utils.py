"""Small rclpy helpers shared by the emu_ros nodes: declared parameters, worker threads, main()."""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable, Iterator, Optional, Sequence

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.task import Future


#: Goal/cancel service queues deep enough that a burst of goals is answered (rejected) rather than
#: silently dropped by DDS (the default service depth is 10).
GOAL_SERVICE_QOS = QoSProfile(depth=256, reliability=QoSReliabilityPolicy.RELIABLE)
#: Plans, step images and markers: reliable + transient local, so a late subscriber (rviz, a review
#: UI) still gets the latest one.
LATCHED = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


def declare(node, name: str, default: Any, description: str, read_only: bool = False,
            int_range: Optional[tuple] = None, float_range: Optional[tuple] = None) -> None:
    """Declare one parameter with a description (shown by `ros2 param describe`) and an optional range."""
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if int_range is not None:
        desc.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    if float_range is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float(float_range[0]), to_value=float(float_range[1]))]
    node.declare_parameter(name, default, desc)


def param(node, name: str) -> Any:
    return node.get_parameter(name).value


def in_thread(node, fn: Callable[[], Any], name: str = "emu_ros_worker") -> Future:
    """Run `fn` in a worker thread; the returned rclpy Future can be awaited by an async callback.

    The executor thread is free while `fn` runs (the model or the robot motion never blocks
    callbacks). The no-op done callback makes `set_result` wake the executor (rclpy only
    reschedules an awaiting task when the future has done callbacks to dispatch).
    """
    fut = Future(executor=node.executor)
    fut.add_done_callback(lambda _f: None)

    def work() -> None:
        try:
            fut.set_result(fn())
        except BaseException as e:  # noqa: BLE001 - delivered to the awaiting callback
            fut.set_exception(e)

    threading.Thread(target=work, name=name, daemon=True).start()
    return fut


def shutdown_executor(executor, timeout_sec: Optional[float] = None) -> None:
    """Shut an executor down without a callback hitting its destroyed guard condition.

    rclpy (Kilted) destroys the executor's guard condition before it joins a MultiThreadedExecutor's
    worker pool, so a callback still running there fails on it and prints "exception was never
    retrieved: cannot use Destroyable" at exit. Joining the pool first lets those callbacks finish.
    """
    pool = getattr(executor, "_executor", None)  # MultiThreadedExecutor's ThreadPoolExecutor (Humble..Kilted)
    if pool is not None:
        pool.shutdown(wait=True)
    executor.shutdown(timeout_sec=timeout_sec)


def spin_nodes(nodes: Sequence, threads: int = 4, after: Optional[Callable[[], None]] = None) -> int:
    """Spin nodes in a MultiThreadedExecutor until Ctrl-C or shutdown; the usual main() body."""
    executor = MultiThreadedExecutor(num_threads=threads)
    for n in nodes:
        executor.add_node(n)
    try:
        if after is not None:
            after()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001 - re-raised unless it is the shutdown racing the wait
        # Ctrl-C shuts the context down from the signal handler; a spin that was between its "still ok?"
        # check and building the next wait set then fails with RCLError ("the given context is not
        # valid") instead of ExternalShutdownException. That is a shutdown, not a crash.
        if rclpy.ok(context=executor.context):
            raise
    finally:
        shutdown_executor(executor)
        for n in nodes:
            try:
                n.destroy_node()
            except Exception as e:  # noqa: BLE001 - keep shutting the others down
                logging.getLogger(__name__).warning("destroy_node failed: %s", e)
        rclpy.try_shutdown()
    return 0


@contextlib.contextmanager
def background_node(name: str, signal_handlers: bool = True) -> Iterator:
    """rclpy initialised, one node spun by a background thread, all torn down on exit: for command-line
    helpers (calibrate-*) whose main thread talks to the user while callbacks keep arriving.

    `signal_handlers=False` keeps Ctrl-C a KeyboardInterrupt in the main thread (rclpy's own handler
    would shut the context down under the spinning thread), so a helper can still use what it has.
    """
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions  # Humble's rclpy.init takes signal_handler_options

    rclpy.init(signal_handler_options=SignalHandlerOptions.ALL if signal_handlers else SignalHandlerOptions.NO)
    node = Node(name)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield node
    finally:
        executor.shutdown()
        spinner.join(5.0)  # never exit with the spin thread inside rcl (the process would abort)
        node.destroy_node()
        rclpy.try_shutdown()

