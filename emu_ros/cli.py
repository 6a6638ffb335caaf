"""`emu-ros`: one command, one verb per job; each verb lives in its own module with a `main(argv)`.

    emu-ros demo                       simulated ALOHA, whole pipeline, writes a storyboard + report
    emu-ros run --profile aloha        guidance + bridge nodes in one process (no `launch` needed)
    emu-ros eval --task transfer_cube --episodes 50 --fault missed_grasp --compare
    emu-ros check-model /data/Emu3.5   verify a downloaded model directory in seconds
    emu-ros calibrate FRAMES/ --profile aloha   visual-check threshold from labelled frames
    emu-ros calibrate-gripper --profile aloha --gripper left_gripper   gripper range off /joint_states
    emu-ros calibrate-camera --profile aloha --camera cam_high --arm right_arm --marker-id 0 \
        --marker-size 0.03 --marker-offset X Y Z [--auto]   camera's to_base from a marker on a gripper
"""
from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

#: verb → (module, one-line help). Modules are imported only when their verb runs, so `emu-ros
#: check-model` needs no ROS and `emu-ros run` needs no MuJoCo.
VERBS = {
    "demo": ("emu_ros.demo", "run one simulated ALOHA task end to end (no weights, robot or GPU needed)"),
    "run": ("emu_ros.ros.run", "start the emu_guidance and emu_bridge nodes in one process"),
    "eval": ("emu_ros.sim.evaluate", "success rate of simulated episodes with injected faults"),
    "check-model": ("emu_ros.model.check", "verify an Emu3.5 model directory without loading the weights"),
    "calibrate": ("emu_ros.bridge.visual_check", "calibrate the visual-check threshold on labelled frames"),
    "calibrate-gripper": ("emu_ros.ros.calibrate_gripper", "read a gripper's open/closed positions off /joint_states"),
    "calibrate-camera": ("emu_ros.ros.calibrate_camera", "camera-to-base transform from a marker on a gripper"),
}


def usage() -> str:
    lines = ["usage: emu-ros <verb> [options]   (emu-ros <verb> --help for the verb's options)", "", "verbs:"]
    width = max(len(v) for v in VERBS) + 2
    lines += [f"  {v:<{width}}{h}" for v, (_, h) in VERBS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"emu-ros: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[verb][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
