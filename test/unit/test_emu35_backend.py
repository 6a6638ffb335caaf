"""Emu3.5 backend: streaming through the engine, stop reasons, errors and cancel (fake runtime),
plus one end-to-end run on the tiny random checkpoint (random weights: any output must be handled)."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from fakes import FakeImageSource

from emu_ros.guidance.backends import make_world_model
from emu_ros.guidance.backends.emu35 import Emu35Unavailable, Emu35WorldModel
from emu_ros.guidance.engine import GuidanceEngine
from emu_ros.core.types import Cancelled, CancelToken, HistoryEntry, OutcomeStatus, PlanningError

IMG = np.full((16, 16, 3), 9, np.uint8)


class FakeRuntime:
    """Calls on_text/on_image like Emu35Runtime.generate_interleaved and records the call."""

    def __init__(self, chunks=(), stop_reason="eos", raises=None, slow_s=0.0):
        self.chunks, self.stop_reason, self.raises, self.slow_s = list(chunks), stop_reason, raises, slow_s
        self.calls = []

    def generate_interleaved(self, prompt_text, images=(), task="vla", config=None, image_area=None, on_text=None,
                             on_image=None, cancel=None, image_decoder=None):
        self.calls.append(SimpleNamespace(prompt=prompt_text, images=list(images), task=task, config=config))
        for c in self.chunks:
            if cancel is not None and cancel():
                return SimpleNamespace(stop_reason="cancelled")
            if self.slow_s:
                time.sleep(self.slow_s)
            if isinstance(c, Exception):
                raise c
            (on_text if isinstance(c, str) else on_image)(c)
        if self.raises:
            raise self.raises
        return SimpleNamespace(stop_reason=self.stop_reason)


def engine_for(runtime, **kw):
    return GuidanceEngine(Emu35WorldModel(runtime=runtime, **kw), FakeImageSource())


def test_streams_steps_with_prompt_and_camera_image():
    rt = FakeRuntime(["Step 1: Move the right ", "gripper above the cube", IMG, "Step 2: Grasp the cube", IMG])
    seen = []
    plan = engine_for(rt).plan("transfer the cube", on_step=seen.append,
                               history=[HistoryEntry("Reach the cube", OutcomeStatus.FAILED, "aborted")])
    assert [s.text for s in plan.steps] == ["Move the right gripper above the cube", "Grasp the cube"]
    assert plan.source == "emu35-ar" and all(s.source == "emu35-ar" and s.image is not None for s in plan.steps)
    assert len(seen) == 2
    call = rt.calls[0]
    assert call.task == "vla" and len(call.images) == 1 and call.images[0].shape == (96, 128, 3)
    assert call.prompt.startswith("Transfer the cube.") and 'The step "Reach the cube" failed (aborted).' in call.prompt


def test_budget_stop_marks_truncation_and_drops_imageless_tail():
    rt = FakeRuntime(["Step 1: Grasp the cube", IMG, "Step 2: Lift the"], stop_reason="max_new_tokens")
    plan = engine_for(rt).plan("t")
    assert [s.text for s in plan.steps] == ["Grasp the cube"]
    assert "generation stopped early: max_new_tokens" in plan.notes
    assert plan.complete is False and plan.cut_reason == "the output was cut (max_new_tokens) after 1 step(s)"
    finished = engine_for(FakeRuntime(["Step 1: Grasp the cube", IMG], stop_reason="eos")).plan("t")
    assert finished.complete is True and finished.cut_reason == ""


def test_runtime_exception_is_a_planning_error():
    rt = FakeRuntime(["Step 1: Grasp"], raises=RuntimeError("CUDA out of memory"))
    with pytest.raises(PlanningError, match="emu35-ar generation failed: RuntimeError: CUDA out of memory"):
        engine_for(rt).plan("t")


def test_cancel_stops_generation():
    rt = FakeRuntime(["Step 1: Grasp the cube\n"] * 200, slow_s=0.01)
    token = CancelToken()
    threading.Timer(0.1, token.cancel).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        engine_for(rt).plan("t", cancel=token)
    assert time.monotonic() - t0 < 1.5


def test_settings_are_validated():
    pytest.importorskip("torch", reason="generation settings are checked against the model runtime (torch)")
    with pytest.raises(Emu35Unavailable, match="needs model_dir"):
        Emu35WorldModel()
    with pytest.raises(Emu35Unavailable, match="does not exist"):
        Emu35WorldModel(model_dir="/nonexistent/Emu3.5")
    with pytest.raises(Emu35Unavailable, match="DiDA image decoder"):
        make_world_model("emu35-dida", runtime=FakeRuntime())
    with pytest.raises(ValueError, match="official templates"):
        Emu35WorldModel(runtime=FakeRuntime(), task_type="story")
    with pytest.raises(ValueError, match=r"unknown generation setting\(s\) \['temprature'\]"):
        Emu35WorldModel(runtime=FakeRuntime(), generation={"temprature": 0.5})


def test_tiny_random_checkpoint_end_to_end(tmp_path):
    """Random weights give garbage text; with seed 0 and 200 tokens the budget runs out mid-output, so
    the engine must return the steps it could parse as a plan marked cut (never a finished plan)."""
    pytest.importorskip("torch")
    pytest.importorskip("tiktoken")
    from emu_ros.model import write_random_checkpoint

    write_random_checkpoint(tmp_path, "tiny", seed=0)
    wm = make_world_model("emu35", model_dir=str(tmp_path / "Emu3.5"), dtype="float32", image_area=4096,
                          generation={"max_new_tokens": 200, "seed": 0})
    engine = GuidanceEngine(wm, FakeImageSource())
    plan = engine.plan("transfer the cube")
    assert plan.source == "emu35-ar" and 1 <= len(plan.steps) <= 12
    assert all(isinstance(s.text, str) and s.text for s in plan.steps)
    assert plan.complete is False and "max_new_tokens" in plan.cut_reason
    assert "generation stopped early: max_new_tokens" in plan.notes


def test_step_image_size_and_token_budget_follow_the_request():
    """A 4:3 view at the default 512x512 step-image area is a 28x37 token grid; the budget holds max_steps
    such images with their text, so a 12-step plan is not cut after its first image."""
    pytest.importorskip("torch", reason="the generation config comes from the model runtime (torch)")
    from emu_ros.guidance.backends.emu35 import plan_token_budget, step_image_grid

    assert step_image_grid((480, 640, 3), 512 * 512) == (28, 37)
    assert step_image_grid(None, 512 * 512) == (32, 32)
    assert plan_token_budget((28, 37), 12) == 12 * (28 * 38 + 8 + 96) + 256
    rt = FakeRuntime(["Step 1: Grasp the cube", IMG])
    engine_for(rt).plan("t")
    cfg = rt.calls[0].config
    assert cfg.image_size == (28, 37) and cfg.max_new_tokens == plan_token_budget((28, 37), 12)
    rt = FakeRuntime(["Step 1: Grasp the cube", IMG])
    engine_for(rt, generation={"max_new_tokens": 500}).plan("t")
    assert rt.calls[0].config.max_new_tokens == 500 and rt.calls[0].config.image_size == (28, 37)  # fixed budget kept
    rt = FakeRuntime(["Step 1: Grasp the cube", IMG])
    engine_for(rt, step_image_area=None).plan("t")
    assert rt.calls[0].config.image_size is None  # official behaviour: the last view's grid
