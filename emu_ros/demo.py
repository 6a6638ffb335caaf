"""`emu-ros demo`: one simulated ALOHA task end to end, a missed grasp injected, re-planned and recovered.

    emu-ros demo                                  # transfer_cube, seed 0, missed grasp, via ROS nodes
    emu-ros demo --fault none --seed 3 --out /tmp/demo
    emu-ros demo --no-ros                         # the same loop without rclpy (core TaskRunner)
    emu-ros demo --task clear_table --fault missed_napkin   # 12 steps, napkin pinch missed and repaired
    emu-ros demo --planner scripted                         # the labelled scripted reference plans instead

The pipeline is the real one: simulated cameras → emu_guidance (lifecycle node, GeneratePlan) →
emu_bridge (ExecuteTask, TaskRunner, skills, StepMonitor) → simulated arms, in one process. The
planner is the shipped simulator world model (models/sim-aloha: steps and predicted step images from
the current camera view, DiDA) for the tasks it was trained on, else (or with --planner scripted) the
labelled SCRIPTED REFERENCE planner (step images rendered from a fault-free reference run of the same
seed); --model-dir points at Emu3.5 weights instead. Writes to --out:
events.jsonl + images (task log), storyboard.html/.png, top_camera.mp4 (or .gif), summary.json.
Ctrl-C at any point cancels the task and still writes everything that happened so far.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence


from emu_ros.sim.faults import FAULT_KINDS
from emu_ros.sim.tasks import TASKS

log = logging.getLogger("emu_ros.demo")
#: the fault a demo shows when none is named
DEFAULT_FAULT = {"clear_table": "missed_napkin"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emu-ros demo", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="transfer_cube", choices=sorted(TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fault", default=None, choices=FAULT_KINDS,
                   help="injected fault (default: missed_grasp; clear_table: missed_napkin)")
    p.add_argument("--perception", default="oracle", choices=["oracle", "camera"],
                   help="object poses: the labelled ground-truth oracle, or camera perception on rendered RGB-D frames")
    p.add_argument("--max-replans", type=int, default=3)
    p.add_argument("--out", default=None, help="output folder (default: ./emu_ros_demo/<time>)")
    p.add_argument("--no-ros", action="store_true", help="run the core TaskRunner directly, without rclpy")
    p.add_argument("--planner", default="auto", choices=["auto", "world-model", "scripted"],
                   help="world-model: the shipped simulator world model (models/sim-aloha) plans the steps and "
                        "predicts each step image from the current camera view; scripted: the labelled scripted "
                        "reference (step images rendered from a fault-free run of the same seed); auto (default): "
                        "the world model for the tasks it was trained on (transfer_cube, insertion)")
    p.add_argument("--model-root", default=None, help="another trained copy of the simulator world model "
                   "(a folder with Emu3.5/, Emu3.5-VisionTokenizer/, backend.yaml; `make world-model` writes one)")
    p.add_argument("--instruction", default=None, help="what to ask for, in any phrasing (default: the task's own)")
    p.add_argument("--model-dir", default=None, help="Emu3.5 weights (e.g. the 34B release): plan with them instead")
    p.add_argument("--vq-dir", default=None, help="Emu3.5-VisionTokenizer directory (with --model-dir)")
    p.add_argument("--decoder", default="auto", choices=["auto", "ar", "dida"],
                   help="with --model-dir: image decoder (auto = dida when the weights carry dida_config.json)")
    p.add_argument("--dida-dir", default=None, help="with --model-dir: DiDA-adapted weights directory")
    p.add_argument("--device", default=None, help="with --model-dir: torch device (default: cuda when available)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up (cancel) after this many seconds")
    p.add_argument("--quiet", action="store_true")
    return p


class FrameRecorder:
    """Records the top camera every `every` control ticks (sim time) for the video; runs in the sim tick."""

    def __init__(self, sim, camera: str = "cam_high", every: int = 5, size: tuple = (240, 320), max_frames: int = 900):
        self.sim, self.camera, self.every, self.size, self.max_frames = sim, camera, every, size, max_frames
        self.frames: list = []
        sim.tick_hooks.append(self)

    def __call__(self, sim) -> None:
        if sim.ticks % self.every == 0 and len(self.frames) < self.max_frames:
            self.frames.append(sim.render(self.camera, *self.size))

    def close(self) -> None:
        if self in self.sim.tick_hooks:
            self.sim.tick_hooks.remove(self)


class Progress:
    """tqdm bar over the plan's steps; re-plans and outcomes are written above the bar."""

    def __init__(self, quiet: bool):
        from tqdm import tqdm

        self.quiet = quiet
        self.bar = tqdm(total=0, unit="step", disable=quiet, dynamic_ncols=True)
        self.last_phase = ""

    def update(self, phase: str, step_index: int, step_text: str, outcome: str, replans: int, total: Optional[int] = None):
        if self.quiet:
            return
        if total is not None and total != self.bar.total:
            self.bar.total = total
            self.bar.n = 0
        if phase == "checking" and outcome.startswith("finished"):
            self.bar.n = min(step_index + 1, self.bar.total or step_index + 1)
        elif phase == "checking" and outcome:
            self.bar.write(f"  step {step_index + 1} {outcome}")
        elif phase == "replanning" and self.last_phase != "replanning":
            self.bar.write(f"  re-planning from the current camera view (re-plan #{replans})")
        desc = f"{phase:<10} {step_text[:48]}"
        if desc != self.bar.desc:  # redraw on change only (feedback comes in bursts)
            self.bar.set_description(desc)
        self.last_phase = phase

    def close(self) -> None:
        self.bar.close()


def backend_settings(args) -> tuple:
    if args.model_dir:
        if not args.vq_dir:
            raise SystemExit("--model-dir needs --vq-dir (the Emu3.5-VisionTokenizer directory)")
        settings = {"model_dir": args.model_dir, "vq_dir": args.vq_dir, "device": args.device or default_device(),
                    "mode": args.decoder}
        if args.dida_dir:
            settings["dida_dir"] = args.dida_dir
        return "emu35", settings
    if args.planner == "world-model":
        return "sim-world-model", ({"model_root": args.model_root} if args.model_root else {})
    return "scripted", {}


def planner_label(args) -> str:
    """What plans, said plainly on the console and in summary.json."""
    if args.model_dir:
        return "Emu3.5 weights from " + args.model_dir
    if args.planner == "world-model":
        return "world model " + (args.model_root or "models/sim-aloha (shipped)") + ", DiDA image decoder"
    return "SCRIPTED REFERENCE planner (labelled; not the world model)"


def default_device() -> str:
    """cuda when torch sees a GPU, else cpu (said on stderr: a 34B model on cpu is a long wait)."""
    try:
        import torch
    except ImportError:
        torch = None  # the model path will name what is missing; the device is cpu either way
    if torch is not None and torch.cuda.is_available():
        return "cuda"
    print("[demo] no CUDA device: the model runs on cpu", file=sys.stderr)
    return "cpu"


def run_ros(args, session, log_root: Path, progress: Progress) -> str:
    """The node graph in one process; returns the ExecuteTask outcome label."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from emu_ros.client import EmuClient, TaskResult
    from emu_ros.ros.bridge_node import BridgeNode
    from emu_ros.ros.guidance_node import GuidanceNode
    from emu_ros.ros.sim_nodes import SimCameraPublisher, wait_until

    backend, settings = backend_settings(args)
    # Ctrl-C must reach us as KeyboardInterrupt (cancel the task, write the report) instead of
    # rclpy's handler shutting the context down under the running nodes.
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    params = [Parameter("profile", value="sim_aloha"), Parameter("backend", value=backend),
              Parameter("task_dir", value=str(session.task_dir))]
    names = {"model_dir": "model_dir", "vq_dir": "vq_dir", "device": "device", "mode": "decoder", "dida_dir": "dida_dir",
             "model_root": "model_dir"}
    params += [Parameter(names[k], value=v) for k, v in settings.items() if k in names]
    guidance = GuidanceNode(parameter_overrides=params)
    bridge = BridgeNode(adapter=session.world.adapter, perception=session.world.perception,
                        skill_executor=session.executor, parameter_overrides=[
                            Parameter("profile", value="sim_aloha"), Parameter("max_replans", value=args.max_replans),
                            Parameter("log_dir", value=str(log_root))])
    cameras = SimCameraPublisher(session.world, rate_hz=5.0)
    executor = MultiThreadedExecutor(num_threads=6)
    for n in (guidance, bridge, cameras):
        executor.add_node(n)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = EmuClient()
    outcome = "failed"
    try:
        if guidance.trigger_configure().name != "SUCCESS" or guidance.trigger_activate().name != "SUCCESS":
            raise RuntimeError("emu_guidance did not configure/activate (see the log above)")
        if not client.wait_until_active(30):
            raise RuntimeError(f"emu_guidance not active: {client.get_task_error()[1]}")
        # Start once the first camera frames arrived, as an operator would (planning never goes blind).
        if not wait_until(lambda: all(s.received for s in guidance.hub.status() if s.camera == "cam_high"), 15.0):
            progress.bar.write("warning: no camera frame after 15 s; the planner will report the missing camera")
        def on_feedback(fb):
            plan = client.latest_plan()  # emu_guidance's latched ~/plan gives the step count
            progress.update(fb.phase, fb.step_index, fb.step_text, fb.outcome, fb.replans,
                            len(plan.steps) if plan is not None else None)

        if not client.execute_task(args.instruction or session.instruction, max_replans=args.max_replans,
                                   on_feedback=on_feedback):
            raise RuntimeError(f"ExecuteTask not accepted: {client.get_task_error()[1]}")
        try:
            result = TaskResult.UNKNOWN
            result = client.wait_for_result(args.timeout)
            if result is TaskResult.UNKNOWN:
                progress.bar.write(f"no result within {args.timeout:.0f} s: canceling")
                client.cancel()
                result = client.wait_for_result(30)
        except KeyboardInterrupt:
            progress.bar.write("Ctrl-C: canceling the task (the log and report are still written)")
            client.cancel()
            result = client.wait_for_result(30)
        outcome = {TaskResult.SUCCEEDED: "succeeded", TaskResult.CANCELED: "canceled"}.get(result, "failed")
    finally:
        client.destroy()
        executor.shutdown(timeout_sec=2.0)
        for n in (cameras, bridge, guidance):
            n.destroy_node()
        rclpy.try_shutdown()
    return outcome


def run_core(args, session, log_root: Path, progress: Progress) -> str:
    """The same loop without ROS: GuidanceEngine + TaskRunner over the simulator directly."""
    from emu_ros.bridge.monitor import StepMonitor
    from emu_ros.bridge.runner import EventType, RunnerConfig, TaskRunner
    from emu_ros.guidance.backends import make_world_model
    from emu_ros.guidance.engine import EngineConfig, GuidanceEngine

    backend, settings = backend_settings(args)
    if backend == "scripted":
        settings = {"task_dir": session.task_dir}
    world = session.world
    engine = GuidanceEngine(make_world_model(backend, **settings), world.images, EngineConfig(cameras=("cam_high",)))
    runner = TaskRunner(engine, world.mapper, session.executor, world.adapter, StepMonitor(world.profile),
                        image_source=world.images, config=RunnerConfig(max_replans=args.max_replans), log_root=log_root)
    phases = {EventType.STEP_STARTED: "executing", EventType.REPLANNING: "replanning", EventType.PLANNING: "planning"}

    def listen(e):
        phase = phases.get(e.type, "checking" if e.outcome is not None else e.type.value)
        outcome = f"{e.outcome.status.value}: {e.outcome.reason}" if e.outcome is not None else ""
        progress.update(phase, e.step_index or 0, e.step_text, outcome, e.replans, e.step_count or None)

    runner.add_listener(listen)
    holder = {}
    instruction = args.instruction or session.instruction
    t = threading.Thread(target=lambda: holder.update(r=runner.run(instruction)), daemon=True)
    t.start()
    try:
        t.join(args.timeout)
        if t.is_alive():
            runner.cancel(f"no result within {args.timeout:.0f} s")
            t.join(30)
    except KeyboardInterrupt:
        progress.bar.write("Ctrl-C: canceling the task (the log and report are still written)")
        runner.cancel("Ctrl-C")
        t.join(30)
    return holder["r"].status if "r" in holder else "canceled"


def newest_run(log_root: Path) -> Optional[Path]:
    runs = sorted((p for p in log_root.glob("*") if (p / "events.jsonl").exists()), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fault is None:
        args.fault = DEFAULT_FAULT.get(args.task, "missed_grasp")
    from emu_ros.guidance.backends.sim_world_model import resolve_planner

    args.planner, why = resolve_planner(args.planner, args.task, args.model_root)
    if why:
        print(f"[demo] {why}")
    logging.basicConfig(level=logging.WARNING if not args.quiet else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = Path(args.out or Path("emu_ros_demo") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    use_ros = not args.no_ros
    if use_ros:
        try:
            import rclpy  # noqa: F401
            from emu_ros.action import ExecuteTask  # noqa: F401
        except ImportError as e:
            print(f"[demo] rclpy/emu_ros interfaces unavailable ({e}): running the core loop without ROS "
                  "(source activate.sh after scripts/setup_env.sh for the ROS path)")
            use_ros = False
    from emu_ros.report import write_storyboard, write_video
    from emu_ros.ros.sim_nodes import SimSession
    from emu_ros.sim.scoring import score

    backend = planner_label(args)
    print(f"[demo] task {args.task}, seed {args.seed}, fault {args.fault}, planner: {backend}, object poses: "
          f"{'camera perception (rendered RGB-D)' if args.perception == 'camera' else 'GROUND-TRUTH ORACLE (labelled)'}, "
          f"path: {'ROS nodes (emu_guidance + emu_bridge)' if use_ros else 'core TaskRunner (no ROS)'}")
    print(f"[demo] output: {out}")
    t0 = time.monotonic()
    session = SimSession.create(args.task, args.seed, out, fault=args.fault, perception=args.perception)
    recorder = FrameRecorder(session.world.sim)
    progress = Progress(args.quiet)
    log_root = out / "task_log"
    outcome = "failed"
    try:
        outcome = (run_ros if use_ros else run_core)(args, session, log_root, progress)
    except KeyboardInterrupt:
        outcome = "canceled"
    except Exception as e:  # noqa: BLE001 - report what happened, still write the outputs
        log.exception("demo failed")
        outcome = f"error: {e}"
    finally:
        progress.close()
        recorder.close()
        sim_score = score(session.world.sim)
        fault = session.injector.record
        session.close()
    run_dir = newest_run(log_root)
    summary = {"task": args.task, "seed": args.seed, "fault": args.fault, "backend": backend,
               "perception": session.world.perception.name, "path": "ros" if use_ros else "core", "outcome": outcome,
               "sim_success": bool(sim_score.success), "sim_max_reward": float(sim_score.max_reward),
               "fault_fired": bool(fault and fault.fired), "fault_step": fault.step_text if fault else "",
               "wall_s": round(time.monotonic() - t0, 1), "task_log": str(run_dir) if run_dir else None}
    if run_dir is not None:
        from emu_ros.bridge.task_log import read_summary

        try:
            runner_summary = read_summary(run_dir)
            summary.update(replans=runner_summary.get("replans"), steps_done=runner_summary.get("steps_done"),
                           runner_status=runner_summary.get("status"), runner_message=runner_summary.get("message"))
        except FileNotFoundError:
            summary["runner_status"] = "no summary (interrupted)"
        shutil.copy2(run_dir / "events.jsonl", out / "events.jsonl")
        html, png = write_storyboard(run_dir, out, extra={k: summary[k] for k in ("backend", "perception", "fault", "seed",
                                                                                 "outcome", "sim_success", "wall_s")})
        summary.update(storyboard_html=str(html), storyboard_png=str(png))
    if recorder.frames:
        summary["video"] = str(write_video(recorder.frames, out / "top_camera.mp4", fps=10))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"[demo] {'SUCCESS' if summary['sim_success'] and outcome == 'succeeded' else 'NOT SUCCESSFUL'}: "
          f"storyboard {out / 'storyboard.html'}")
    return 0 if outcome == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
