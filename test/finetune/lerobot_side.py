"""Runs INSIDE the lerobot 0.6.1 venv (Python 3.12), driven by test_lerobot_compat.py through subprocess.

    python lerobot_side.py write ROOT     # write a dataset with the real LeRobotDataset API
    python lerobot_side.py read ROOT      # read a dataset with the real API, print a JSON summary

Kept free of emu_ros imports: that venv has lerobot, not emu_ros.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np

H, W = 32, 48
LENGTHS = (25, 31, 17)


def frame_value(episode: int, frame: int) -> int:
    """Gray level drawn into a frame; must match the test's expectation."""
    return (episode * 70 + frame * 9) % 200 + 20


def write(root: str) -> None:
    """Three episodes of different lengths, two video cameras (default av1 encoder) + one image camera, two tasks."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    shutil.rmtree(root, ignore_errors=True)
    names = [f"{s}_{j}" for s in ("left", "right") for j in ("waist", "shoulder", "elbow", "forearm_roll",
                                                              "wrist_angle", "wrist_rotate", "gripper")]
    features = {
        "observation.images.cam_high": {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]},
        "observation.images.cam_left_wrist": {"dtype": "video", "shape": (H, W, 3),
                                              "names": ["height", "width", "channels"]},
        "observation.images.cam_low": {"dtype": "image", "shape": (H, W, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (14,), "names": names},
        "action": {"dtype": "float32", "shape": (14,), "names": names},
    }
    ds = LeRobotDataset.create(repo_id="local/compat", fps=50, root=root, robot_type="aloha", use_videos=True,
                               features=features)
    for e, n in enumerate(LENGTHS):
        for i in range(n):
            img = np.full((H, W, 3), frame_value(e, i), np.uint8)
            ds.add_frame({"observation.images.cam_high": img, "observation.images.cam_left_wrist": 255 - img,
                          "observation.images.cam_low": np.full((H, W, 3), (e * 31 + i) % 256, np.uint8),
                          "observation.state": np.full(14, e * 1000 + i, np.float32),
                          "action": np.full(14, -i, np.float32),
                          "task": "transfer the cube" if e != 1 else "insert the peg"})
        ds.save_episode()
    ds.finalize()
    print(json.dumps({"lengths": LENGTHS}))


def read(root: str) -> None:
    """Every frame's episode/frame index, task, state[0], mean image level and subtask rows, as JSON."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/compat", root=root, video_backend="pyav")
    cams = list(ds.meta.camera_keys)
    items = []
    for i in range(len(ds)):
        it = ds[i]
        persistent = it.get("language_persistent") or []
        items.append({"episode": int(it["episode_index"]), "frame": int(it["frame_index"]), "task": it["task"],
                      "state0": float(it["observation.state"][0]),
                      "levels": {c: float(it[c].mean()) * 255 for c in cams},
                      "subtasks": [[r["timestamp"], r["content"]] for r in persistent if r.get("style") == "subtask"]})
    print(json.dumps({"num_episodes": ds.num_episodes, "num_frames": ds.num_frames, "fps": ds.fps,
                      "cameras": cams, "items": items}))


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](sys.argv[2])
