"""Task log: fsync'd JSONL lines, atomic PNGs and summary, torn-line tolerance, thread safety."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from emu_ros.bridge.task_log import TaskLog, TaskLogClosed, read_events, read_summary
from emu_ros.core.types import OutcomeStatus, StepOutcome


def test_events_images_and_summary(tmp_path):
    log = TaskLog.create(tmp_path, "Fold the T-shirt!")
    assert log.run_dir.name.endswith(f"fold-the-t-shirt_{log.run_id[:6]}")
    img = np.zeros((6, 8, 3), np.uint8)
    img[2, 3] = (255, 0, 0)
    log.write("plan_ready", {"outcome": StepOutcome(1, "grasp", OutcomeStatus.UNFINISHED, "missed"),
                             "vals": (np.float32(0.5), np.int64(3)), "bad": float("nan")}, images={"step1": img, "none": None})
    rec = read_events(log.run_dir)[0]
    assert rec["seq"] == 0 and rec["event"] == "plan_ready" and rec["run_id"] == log.run_id
    assert rec["outcome"]["status"] == "unfinished" and rec["vals"] == [0.5, 3] and rec["bad"] == "nan"
    path = log.run_dir / rec["images"]["step1"]
    assert list(rec["images"]) == ["step1"] and np.array_equal(np.asarray(Image.open(path)), img)
    log.close({"status": "succeeded"})
    assert read_summary(log.run_dir)["status"] == "succeeded" and read_summary(log.run_dir)["events"] == 1
    assert not list(log.run_dir.rglob("*.tmp"))
    with pytest.raises(TaskLogClosed):
        log.write("late")
    log.close()  # idempotent


def test_concurrent_writes_lose_nothing(tmp_path):
    log = TaskLog(tmp_path / "run")

    def writer(k):
        for i in range(50):
            log.write("tick", {"writer": k, "i": i})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    log.close()
    events = read_events(tmp_path / "run")
    assert [e["seq"] for e in events] == list(range(200))
    assert sorted((e["writer"], e["i"]) for e in events) == [(k, i) for k in range(4) for i in range(50)]


def test_torn_last_line_is_skipped_but_earlier_corruption_raises(tmp_path):
    log = TaskLog(tmp_path / "run")
    log.write("a")
    log.write("b")
    log.close()
    p = tmp_path / "run" / "events.jsonl"
    with open(p, "a") as f:
        f.write('{"seq": 2, "event": "c"')  # power lost mid-line
    assert [e["event"] for e in read_events(tmp_path / "run")] == ["a", "b"]
    p.write_text('{"x"\n' + json.dumps({"seq": 1}) + "\n")
    with pytest.raises(json.JSONDecodeError):
        read_events(tmp_path / "run")


def test_append_mode_keeps_earlier_lines(tmp_path):
    TaskLog(tmp_path / "run").write("first")
    log2 = TaskLog(tmp_path / "run")
    log2.write("second")
    log2.close()
    events = read_events(tmp_path / "run")
    assert [(e["seq"], e["event"]) for e in events] == [(0, "first"), (1, "second")]
