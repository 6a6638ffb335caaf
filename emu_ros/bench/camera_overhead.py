"""Camera → numpy overhead and plan publication latency of the ROS layer (a benchmark, not a test).

    python -m emu_ros.bench.camera_overhead [--seconds 10] [--cameras 4] [--hz 30] [--json FILE]

A publisher sends `--cameras` streams of 640x480 rgb8 at `--hz` on the ALOHA topic names with
sensor-data QoS; a subscriber stores each message in a CameraHub with feed_hub and CAMERA_QOS, exactly
as the nodes do (lazy: no conversion in the callback), and a 2 Hz planner thread observes (converting
the latest frames) and records the returned frames' age. Reported: callback time per frame (mean, p95, max),
delivery latency (header stamp → callback), frames received vs sent per camera (a backlog shows
as latency growing over the run), and the latency of publishing a 7-step Plan with 640x480 step
images on ~/plan (reliable, transient local). Target (issue 4): conversion ≤ 2 ms per frame.
"""
from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m emu_ros.bench.camera_overhead", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--hz", type=float, default=30.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from emu_ros.core.camera_hub import CameraHub
    from emu_ros.core.types import Plan, PlanStep
    from emu_ros.msg import Plan as PlanMsg
    from emu_ros.ros.conversions import CAMERA_QOS, feed_hub, plan_to_msg
    from emu_ros.ros.image_conversion import image_to_numpy, numpy_to_image

    names = ["cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"][: args.cameras]
    topics = {n: f"/{n}/camera/color/image_rect_raw" for n in names}
    rclpy.init()
    pub_node, sub_node = Node("bench_camera_pub"), Node("bench_camera_sub")
    hub = CameraHub(names, max_age_s=1.0)
    conv_ms, lat_ms, recv = [], [], {n: 0 for n in names}
    lock = threading.Lock()

    class _Log:
        def warning(self, *a, **k):
            pass

    obs_ms, age_ms = [], []

    def on_image(cam, msg):
        t0 = time.perf_counter()
        feed_hub(hub, cam, msg, _Log())  # what the nodes do: O(1), conversion deferred to observe
        dt = (time.perf_counter() - t0) * 1e3
        now = sub_node.get_clock().now().nanoseconds
        with lock:
            conv_ms.append(dt)
            lat_ms.append((now - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)
            recv[cam] += 1

    for n in names:
        sub_node.create_subscription(Image, topics[n], lambda m, c=n: on_image(c, m), CAMERA_QOS)
    pubs = {n: pub_node.create_publisher(Image, topics[n], qos_profile_sensor_data) for n in names}
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    ex = MultiThreadedExecutor(num_threads=2)
    ex.add_node(sub_node)
    threading.Thread(target=ex.spin, daemon=True).start()
    time.sleep(1.0)  # discovery
    stop = threading.Event()

    def planner():  # observes at 2 Hz like a planning loop; times conversion and the returned frame's age
        while not stop.wait(0.5):
            t0 = time.perf_counter()
            try:
                obs = hub.observe()
            except Exception:
                continue
            obs_ms.append((time.perf_counter() - t0) * 1e3)
            now = time.time()
            age_ms.extend((now - f.stamp) * 1e3 for f in obs.frames.values())

    threading.Thread(target=planner, daemon=True).start()
    sent = 0
    period = 1.0 / args.hz
    t_end = time.monotonic() + args.seconds
    next_t = time.monotonic()
    while time.monotonic() < t_end:
        stamp = pub_node.get_clock().now().to_msg()
        for n in names:
            pubs[n].publish(numpy_to_image(frame, "rgb8", stamp=stamp))
        sent += 1
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
    time.sleep(0.5)
    stop.set()

    latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    plan_pub = pub_node.create_publisher(PlanMsg, "/bench/plan", latched)
    got, plan_lat = threading.Event(), {}
    sub_node.create_subscription(PlanMsg, "/bench/plan", lambda m: (plan_lat.setdefault("t", time.perf_counter()), got.set()), latched)
    time.sleep(0.5)
    plan = Plan(task="bench", plan_id="p", steps=[PlanStep(index=i, text=f"step {i}", image=frame, source="bench") for i in range(7)])
    t0 = time.perf_counter()
    msg = plan_to_msg(plan, "world")
    t_conv = time.perf_counter()
    plan_pub.publish(msg)
    got.wait(10.0)
    ex.shutdown()
    rclpy.try_shutdown()

    c, l = np.array(conv_ms), np.array(lat_ms)
    half = len(l) // 2
    result = {
        "cameras": len(names), "hz": args.hz, "seconds": args.seconds, "resolution": "640x480 rgb8",
        "frames_sent_per_camera": sent, "frames_received": recv,
        "conversion_ms": {"mean": float(c.mean()), "p95": float(np.percentile(c, 95)), "max": float(c.max())},
        "callback_ms_note": "conversion_ms is the subscription callback cost (feed_hub, lazy)",
        "observe_ms": {"mean": float(np.mean(obs_ms)), "p95": float(np.percentile(obs_ms, 95))} if obs_ms else None,
        "frame_age_ms": {"p50": float(np.percentile(age_ms, 50)), "p95": float(np.percentile(age_ms, 95))} if age_ms else None,
        "latency_ms": {"mean": float(l.mean()), "p95": float(np.percentile(l, 95)),
                       "first_half_mean": float(l[:half].mean()), "second_half_mean": float(l[half:].mean())},
        "plan_7_steps_ms": {"to_msg": (t_conv - t0) * 1e3,
                            "publish_to_receive": ((plan_lat["t"] - t_conv) * 1e3) if "t" in plan_lat else None},
    }
    print(f"observe (converts {len(names)} latest frames): {result['observe_ms']}; returned frame age ms: {result['frame_age_ms']}")
    print(f"callback per frame: mean {result['conversion_ms']['mean']:.2f} ms, p95 {result['conversion_ms']['p95']:.2f} ms "
          f"(target <= 2 ms); latency mean {result['latency_ms']['mean']:.1f} ms "
          f"(first half {result['latency_ms']['first_half_mean']:.1f}, second half {result['latency_ms']['second_half_mean']:.1f}: "
          f"equal halves = no backlog); received {recv} of {sent} per camera; 7-step plan: "
          f"to_msg {result['plan_7_steps_ms']['to_msg']:.1f} ms, delivery {result['plan_7_steps_ms']['publish_to_receive']} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
