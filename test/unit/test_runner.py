"""TaskRunner acceptance (issue 9): execution in order, every injected fault, cancel, budgets, log integrity."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from fakes import SEVEN_STEPS, EventRecorder, FakeAdapter, FakeExecutor, FakeImageSource, FakeWorldModel, Scene

from emu_ros.core.kinematics import SerialChain
from emu_ros.bridge.monitor import StepMonitor
from emu_ros.core.protocols import GoalStatus, GripperGoal
from emu_ros.bridge.runner import EventType, RunnerConfig, TaskRunner
from emu_ros.bridge.skill_mapper import SkillMapper
from emu_ros.bridge.task_log import read_events, read_summary
from emu_ros.bridge.visual_check import HistSSIMJudge
from emu_ros.guidance.engine import GuidanceEngine
from emu_ros.core.types import Cancelled, OutcomeStatus

MAPPER = SkillMapper.load()


class Rig:
    """A runner wired to fakes; `run()` executes a task and keeps the result."""

    def __init__(self, profile, tmp_path, steps=SEVEN_STEPS, script=None, raw=False, executor_raises=None, **cfg):
        cfg.setdefault("settle_s", 0.0)
        cfg.setdefault("planning_retry_delay_s", 0.0)
        self.profile = profile
        self.adapter = FakeAdapter(profile)
        self.executor = FakeExecutor(profile, self.adapter, raise_on=executor_raises)
        self.wm = FakeWorldModel(steps, script=script, raw=raw)
        self.src = FakeImageSource(Scene())
        self.engine = GuidanceEngine(self.wm, self.src)
        monitor = StepMonitor(profile, judge=HistSSIMJudge(threshold=0.75))
        self.runner = TaskRunner(self.engine, MAPPER, self.executor, self.adapter, monitor, self.src,
                                 RunnerConfig(**cfg), log_root=tmp_path)
        self.rec = EventRecorder()
        self.runner.add_listener(self.rec)

    def runner_replans(self):
        return sum(1 for e in self.rec.events if e.type is EventType.REPLANNING)

    def run(self, task="transfer the cube"):
        self.result = self.runner.run(task)
        self.events = read_events(self.result.log_dir)
        return self.result

    def codes(self):
        return [o.code for o in self.result.outcomes if not o.ok]


def assert_log_matches_events(rig):
    """No lost log lines: every listener event is one JSONL line, in order, seq contiguous."""
    assert [e["event"] for e in rig.events] == rig.rec.types()
    assert [e["seq"] for e in rig.events] == list(range(len(rig.events)))
    summary = read_summary(rig.result.log_dir)
    assert summary["events"] == len(rig.events) and summary["status"] == rig.result.status


def test_seven_step_plan_executes_in_order_with_valid_goals(profile, tmp_path):
    rig = Rig(profile, tmp_path)
    res = rig.run()
    assert res.success and res.steps_done == 7 and res.replans == 0 and res.retries == 0
    assert [c.text for c in rig.executor.calls] == SEVEN_STEPS
    assert [c.skill for c in rig.executor.calls] == ["reach", "reach", "grasp", "lift", "reach", "grasp", "release"]
    # every trajectory goes to the arm the step names, with that arm's joints, inside its limits
    arms = ["right", "right", "right", "right", "left", "left", "right"]
    assert [g.group for g in rig.adapter.trajectories] == [f"{a}_arm" for a in arms]
    for goal in rig.adapter.trajectories:
        arm = profile.arm(goal.group)
        chain = SerialChain(arm.chain)
        assert goal.joint_names == arm.joint_names
        for pt in goal.points:
            q = np.array(pt.positions)
            assert q.shape == (6,) and np.all(q >= chain.lower - 1e-9) and np.all(q <= chain.upper + 1e-9)
        assert goal.goal_tolerance == profile.tolerances.joint_goal
    assert [(g.gripper, g.position) for g in rig.adapter.gripper_goals] == [
        ("right_gripper", 0.0), ("left_gripper", 0.0), ("right_gripper", 1.0)]
    # outcomes are logged in order, with the plan and the observed views
    finished = [e for e in rig.events if e["event"] == "step_finished"]
    assert [e["step_text"] for e in finished] == SEVEN_STEPS
    assert all(e["outcome"]["status"] == "finished" and "images" in e for e in finished)
    ready = next(e for e in rig.events if e["event"] == "plan_ready")
    assert [s["text"] for s in ready["plan"]["steps"]] == SEVEN_STEPS and ready["plan"]["source"] == "fake-world-model"
    assert rig.rec.types()[-1] == "done" and rig.rec.types().count("step_planned") == 7
    assert_log_matches_events(rig)


def test_controller_abort_is_retried_then_replanned(profile, tmp_path):
    rig = Rig(profile, tmp_path, max_retries=1)
    # the 3rd trajectory (grasp) aborts, and its retry too → re-plan; then all goes well
    rig.adapter.traj_results = [None, None, GoalStatus.ABORTED, GoalStatus.ABORTED]
    res = rig.run()
    assert res.success and res.retries == 1 and res.replans == 1
    failed = [e for e in rig.rec.events if e.type is EventType.STEP_FAILED]
    assert [(e.step_text, e.attempt, e.will_retry, e.outcome.code) for e in failed] == [
        (SEVEN_STEPS[2], 0, True, "aborted"), (SEVEN_STEPS[2], 1, False, "aborted")]
    types = rig.rec.types()
    assert types.index("replanning") > types.index("step_failed")
    replan_req = rig.wm.requests[1]
    assert replan_req.revision == 1
    assert [(h.text, h.status) for h in replan_req.history][-2:] == [(SEVEN_STEPS[2], OutcomeStatus.FAILED)] * 2
    assert "aborted" in replan_req.history[-1].reason
    assert_log_matches_events(rig)


def test_visual_check_failure_replans_with_failure_in_history(profile, tmp_path):
    lifted = Scene(cube_xy=(64, 30), lifted=True)
    steps = list(SEVEN_STEPS)
    steps[3] = (SEVEN_STEPS[3], lifted.render())  # predicted image: the cube up at the meeting point
    rig = Rig(profile, tmp_path, steps=steps)
    # The first lift "succeeds" as a motion, but the camera still shows the cube on the table (it
    # slipped out); after the re-plan, the lift really lifts it.
    def lift_works_after_replan(call):
        if call.skill == "lift" and rig.runner_replans() > 0:
            rig.src.scene = Scene(cube_xy=(65, 31), lifted=True)

    rig.executor.on_execute = lift_works_after_replan
    res = rig.run()
    assert res.success and res.replans == 1
    unfinished = [e for e in rig.rec.events if e.type is EventType.STEP_UNFINISHED]
    assert len(unfinished) == 1 and unfinished[0].outcome.code == "visual_mismatch"
    assert unfinished[0].outcome.details["visual"]["score"] < 0.75
    hist = rig.wm.requests[1].history
    assert hist[-1].text == SEVEN_STEPS[3] and hist[-1].status is OutcomeStatus.UNFINISHED
    assert "does not match the step's predicted image" in hist[-1].reason
    assert [h.status for h in hist[:3]] == [OutcomeStatus.FINISHED] * 3
    assert "images" in next(e for e in rig.events if e["event"] == "step_unfinished")
    assert_log_matches_events(rig)


def test_missed_grasp_from_gripper_opening_replans(profile, tmp_path):
    rig = Rig(profile, tmp_path)
    rig.adapter.grasp_misses = 1
    res = rig.run()
    assert res.success and res.replans == 1 and res.retries == 0  # UNFINISHED is re-planned, not retried
    assert rig.codes() == ["gripper_empty"]
    assert "closed on nothing" in rig.wm.requests[1].history[-1].reason


def test_joint_tolerance_exceeded(profile, tmp_path):
    rig = Rig(profile, tmp_path, max_retries=1, max_replans=1)
    rig.adapter.joint_offset = 0.2
    res = rig.run()
    assert res.status == "aborted" and res.steps_done == 0
    assert rig.codes() == ["joint_tolerance"] * 4  # try + retry, twice (first plan and the one re-plan)
    assert "re-plan budget exhausted (1/1 re-plans used)" in res.message
    assert "right_" in res.message and "tolerance 0.050" in res.message
    assert_log_matches_events(rig)


def test_motion_timeout_cancels_goals_and_is_retried(profile, tmp_path):
    rig = Rig(profile, tmp_path, max_retries=1, step_timeout_s=0.3, executor_grace_s=1.0)
    rig.adapter.block = True

    def unblock(event):
        if event.type is EventType.STEP_FAILED:
            rig.adapter.block = False

    rig.rec.on_event = unblock
    res = rig.run()
    assert res.success and res.retries == 1 and res.replans == 0
    assert rig.codes() == ["step_timeout"]
    assert rig.adapter.cancel_calls >= 1
    assert "did not finish within the step timeout 0.3 s" in res.outcomes[0].reason


def test_adapter_timeout_result_is_failed_timeout(profile, tmp_path):
    rig = Rig(profile, tmp_path, max_retries=1)
    rig.adapter.traj_results = [GoalStatus.TIMEOUT]
    assert rig.run().success and rig.codes() == ["timeout"]


def test_unmapped_step_triggers_replan_with_reason(profile, tmp_path):
    first = ["Move the right gripper above the red cube", "Do a little dance", "Grasp the red cube with the right gripper"]
    rig = Rig(profile, tmp_path, script=[first], steps=["Grasp the red cube with the right gripper"])
    res = rig.run()
    assert res.success and res.replans == 1 and res.retries == 0
    assert rig.codes() == ["unmapped"]
    assert "Do a little dance" not in [c.text for c in rig.executor.calls]
    last = rig.wm.requests[1].history[-1]
    assert last.text == "Do a little dance" and last.status is OutcomeStatus.FAILED
    assert last.reason.startswith("unmapped step: no skill phrasing matches")


def test_world_model_raises_then_recovers(profile, tmp_path):
    rig = Rig(profile, tmp_path, script=[RuntimeError("CUDA error: device-side assert")], planning_attempts=2)
    assert rig.run().success and len(rig.wm.requests) == 2


def test_world_model_always_raises_aborts_cleanly(profile, tmp_path):
    rig = Rig(profile, tmp_path, script=[RuntimeError("boom")] * 2, planning_attempts=2)
    res = rig.run()
    assert res.status == "aborted"
    assert res.message == ("planning failed after 2 attempt(s): world model 'fake-world-model' failed: "
                           "RuntimeError: boom")
    assert rig.rec.types()[-1] == "aborted" and rig.adapter.trajectories == []
    assert_log_matches_events(rig)


def test_malformed_output_aborts_with_reason(profile, tmp_path):
    rig = Rig(profile, tmp_path, script=[[np.zeros((4, 4, 3), np.uint8), 17]], raw=True, planning_attempts=1)
    res = rig.run()
    assert res.status == "aborted" and "unusable item" in res.message and "without text" in res.message


def test_a_done_plan_succeeds_with_no_step_and_says_so(profile, tmp_path):
    from emu_ros.guidance.parser import OutputEnd

    rig = Rig(profile, tmp_path, script=[[OutputEnd("eos")]], raw=True)
    res = rig.run()
    assert res.status == "succeeded" and res.outcomes == [] and "no step to do" in res.message
    assert rig.executor.calls == [] and rig.rec.types()[-1] == EventType.DONE.value
    assert_log_matches_events(rig)


def test_an_empty_replan_after_a_failed_step_is_not_success(profile, tmp_path):
    """"Nothing left to do" right after the check found a step unfinished is refused (asked again, then abort)."""
    from emu_ros.guidance.parser import OutputEnd

    rig = Rig(profile, tmp_path, script=[SEVEN_STEPS, [OutputEnd("eos")], [OutputEnd("eos")]], raw=False,
              planning_attempts=2)
    rig.adapter.grasp_misses = 1
    res = rig.run()
    assert res.status == "aborted" and "empty plan after a failed step" in res.message


def test_confirm_done_asks_the_view_after_the_last_step_and_continues_a_plan_that_missed_one(profile, tmp_path):
    """With confirm_done, a finished plan is followed by one more request from the current view: zero steps =
    done; steps = they are executed first (a plan that left a step out is not reported done)."""
    from emu_ros.guidance.parser import OutputEnd

    rig = Rig(profile, tmp_path, script=[SEVEN_STEPS[:5], SEVEN_STEPS[5:], [OutputEnd("eos")]], confirm_done=True)
    res = rig.run()
    assert res.status == "succeeded" and len(res.outcomes) == len(SEVEN_STEPS)
    assert "plans nothing more from the current view" in res.message and len(rig.wm.requests) == 3
    assert rig.rec.types().count(EventType.CONTINUING.value) == 2
    assert_log_matches_events(rig)
    # a world model that always sees more to do: the task is not reported done
    rig = Rig(profile, tmp_path, script=[SEVEN_STEPS[:2], SEVEN_STEPS[2:3], SEVEN_STEPS[3:4]], confirm_done=True,
              max_confirmations=2)
    res = rig.run()
    assert res.status == "aborted" and "still plans steps" in res.message and len(res.outcomes) == 4


def test_replan_failure_is_aborted(profile, tmp_path):
    rig = Rig(profile, tmp_path, script=[SEVEN_STEPS, ValueError("bad weights")], planning_attempts=1)
    rig.adapter.grasp_misses = 1
    res = rig.run()
    assert res.status == "aborted" and res.replans == 1 and "bad weights" in res.message


def test_cancel_mid_step(profile, tmp_path):
    rig = Rig(profile, tmp_path)
    rig.adapter.block = True
    threading.Thread(target=lambda: (rig.adapter.blocking.wait(5), rig.runner.cancel("operator pressed stop")),
                     daemon=True).start()
    res = rig.run()
    assert res.status == "canceled" and "operator pressed stop" in res.message
    assert rig.adapter.cancel_calls >= 1
    assert rig.rec.types()[-1] == "canceled"
    assert read_summary(res.log_dir)["status"] == "canceled"
    assert_log_matches_events(rig)
    # state is clean: nothing running, and the runner takes the next task
    assert not rig.runner.running and rig.runner.cancel() is False
    rig.adapter.block = False
    assert rig.run().success


def test_cancel_during_planning(profile, tmp_path):
    rig = Rig(profile, tmp_path)
    rig.wm.delay_s = 0.05
    threading.Timer(0.1, rig.runner.cancel).start()
    res = rig.run()
    assert res.status == "canceled" and rig.adapter.trajectories == []


def test_replan_budget_exhausted(profile, tmp_path):
    rig = Rig(profile, tmp_path, max_replans=2)
    rig.adapter.grasp_misses = 10
    res = rig.run()
    assert res.status == "aborted" and res.replans == 2
    assert res.message == (f"step 3 \"{SEVEN_STEPS[2]}\" unfinished: right_gripper closed on nothing (opening 0.05 < empty_below "
                           "0.20): the object was missed or slipped out — re-plan budget exhausted (2/2 re-plans used)")
    assert rig.rec.types().count("replanning") == 2
    assert_log_matches_events(rig)


def test_no_replan_mode_stops_at_failed_step(profile, tmp_path):
    rig = Rig(profile, tmp_path, max_replans=0)
    rig.adapter.grasp_misses = 1
    res = rig.run()
    assert res.status == "aborted" and res.steps_done == 2 and "re-planning is off (max_replans=0)" in res.message


def test_faults_in_listeners_adapter_and_executor_never_crash(profile, tmp_path):
    rig = Rig(profile, tmp_path, executor_raises="lift", max_replans=1)

    def bad_listener(event):
        raise RuntimeError("listener bug")

    rig.runner.add_listener(bad_listener)
    res = rig.run()
    assert res.status == "aborted"
    assert rig.codes() == ["executor_error", "executor_error"]  # not retried, re-planned once
    assert "injected executor crash in lift" in res.message
    assert_log_matches_events(rig)

    rig2 = Rig(profile, tmp_path, max_replans=0)
    rig2.adapter.state_fails = True
    res2 = rig2.run()
    assert res2.status == "aborted" and rig2.codes() == ["no_joint_state", "no_joint_state"]


def test_gripper_goal_rejected_is_retried(profile, tmp_path):
    rig = Rig(profile, tmp_path, max_retries=2)
    rig.adapter.grip_results = [GoalStatus.REJECTED]
    res = rig.run()
    assert res.success and rig.codes() == ["rejected"] and res.retries == 1
    assert isinstance(rig.adapter.gripper_goals[0], GripperGoal)


def test_runner_refuses_a_second_concurrent_task(profile, tmp_path):
    rig = Rig(profile, tmp_path)
    rig.adapter.block = True
    t = threading.Thread(target=rig.run, daemon=True)
    t.start()
    assert rig.adapter.blocking.wait(5)
    with pytest.raises(RuntimeError, match="already running"):
        rig.runner.run("another task")
    rig.runner.cancel()
    t.join(5)
    assert rig.result.status == "canceled"


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

STATUSES = st.sampled_from([None, None, None, GoalStatus.ABORTED, GoalStatus.REJECTED, GoalStatus.TIMEOUT,
                            GoalStatus.UNAVAILABLE])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(traj=st.lists(STATUSES, max_size=12), grip=st.lists(STATUSES, max_size=4), misses=st.integers(0, 3),
       offset=st.sampled_from([0.0, 0.0, 0.2]), crash=st.sampled_from([None, "lift", "release"]),
       plan_faults=st.lists(st.sampled_from(["ok", "raise", "junk"]), max_size=3),
       retries=st.integers(0, 2), replans=st.integers(0, 3), bad_listener=st.booleans())
def test_random_faults_never_crash_or_lose_log_lines(profile, tmp_path_factory, traj, grip, misses, offset, crash,
                                                    plan_faults, retries, replans, bad_listener):
    script = [RuntimeError("backend down") if f == "raise" else [17, None] if f == "junk" else SEVEN_STEPS
              for f in plan_faults]
    rig = Rig(profile, tmp_path_factory.mktemp("run"), script=script, executor_raises=crash, max_retries=retries,
              max_replans=replans, planning_attempts=2)
    rig.adapter.traj_results, rig.adapter.grip_results = list(traj), list(grip)
    rig.adapter.grasp_misses, rig.adapter.joint_offset = misses, offset
    if bad_listener:
        rig.runner.add_listener(lambda e: 1 / 0)
    res = rig.run()
    assert res.status in ("succeeded", "aborted") and res.message
    assert rig.rec.types()[-1] == {"succeeded": "done", "aborted": "aborted"}[res.status]
    assert res.replans <= replans and not rig.runner.running
    if res.success:  # the last plan ran to its end
        assert res.outcomes[-1].ok and res.steps_done >= 7
    else:  # aborted: a step failed for good, or no plan could be made
        assert (res.outcomes and not res.outcomes[-1].ok) or res.message.startswith("planning failed")
    assert_log_matches_events(rig)


class BudgetWorldModel:
    """A world model whose output is cut by a token budget after `per_plan` steps (issue 14).

    Like a real one asked again with the finished steps in the history, it continues from there:
    it plans the steps after the ones the history marks finished. `stuck=True` ignores the history
    (a model that never gets further): the task must abort, never succeed.
    """

    name = "budget-world-model"

    def __init__(self, steps, per_plan: int, stuck: bool = False):
        self.steps, self.per_plan, self.stuck, self.requests = list(steps), per_plan, stuck, []

    def plan(self, request, cancel=None):
        from emu_ros.core.types import PlanStep
        from emu_ros.guidance.parser import OutputEnd

        self.requests.append(request)
        done = 0 if self.stuck else sum(1 for h in request.history if h.status is OutcomeStatus.FINISHED)
        rest = self.steps[done:]
        for i, text in enumerate(rest[: self.per_plan]):
            yield PlanStep(index=i, text=text, source=self.name)
        cut = len(rest) > self.per_plan
        yield OutputEnd(reason="max_new_tokens" if cut else "eos", truncated=cut)


def budget_rig(profile, tmp_path, wm, **cfg):
    rig = Rig(profile, tmp_path, **cfg)
    rig.wm = wm
    rig.engine.world_model = wm
    return rig


def test_a_plan_cut_by_the_token_budget_is_never_reported_done(profile, tmp_path):
    """One step fits the budget and continuation is off: the task aborts after that step, saying why."""
    rig = budget_rig(profile, tmp_path, BudgetWorldModel(SEVEN_STEPS[:6], per_plan=1), max_continuations=0)
    res = rig.run()
    assert res.status == "aborted" and not res.success and res.steps_done == 1
    assert "cut (the output was cut (max_new_tokens) after 1 step(s))" in res.message, res.message
    assert res.plans[0].complete is False
    assert_log_matches_events(rig)


def test_a_six_step_task_whose_plans_are_cut_after_two_steps_completes_by_continuation(profile, tmp_path):
    wm = BudgetWorldModel(SEVEN_STEPS[:6], per_plan=2)
    rig = budget_rig(profile, tmp_path, wm)
    res = rig.run()
    assert res.success and res.steps_done == 6 and res.continuations == 2 and res.replans == 0, res.message
    assert [c.text for c in rig.executor.calls] == SEVEN_STEPS[:6]  # each step once, in order
    assert [p.complete for p in res.plans] == [False, False, True]
    # each continuation asked with the finished steps in the history
    assert [len(r.history) for r in wm.requests] == [0, 2, 4]
    continuing = [e for e in rig.events if e["event"] == "continuing"]
    assert len(continuing) == 2 and "asking for the remaining steps after 2 finished" in continuing[0]["message"]
    assert "2 continuation(s)" in res.message
    assert read_summary(res.log_dir)["continuations"] == 2
    assert_log_matches_events(rig)


def test_a_world_model_that_never_gets_further_aborts_after_the_continuation_budget(profile, tmp_path):
    rig = budget_rig(profile, tmp_path, BudgetWorldModel(SEVEN_STEPS[:6], per_plan=2, stuck=True),
                     max_continuations=3)
    res = rig.run()
    assert res.status == "aborted" and res.continuations == 3
    assert "still incomplete after 3 continuation(s)" in res.message, res.message


class ScriptedReviewer:
    """A person at the review screen: answers from `decisions` in order, recording what the robot had done."""

    def __init__(self, rig, decisions):
        self.rig, self.decisions, self.seen = rig, list(decisions), []

    def review(self, plan, cancel):
        self.seen.append((plan.revision, [s.text for s in plan.steps], len(self.rig.adapter.trajectories)))
        d = self.decisions.pop(0)
        if isinstance(d, BaseException):
            raise d
        return d


def test_a_rejected_plan_is_replanned_with_the_reason_and_nothing_moves_before_approval(profile, tmp_path):
    from emu_ros.core.protocols import Review

    rig = Rig(profile, tmp_path)
    reviewer = ScriptedReviewer(rig, [Review(False, "the left arm should take the cube first"), Review(True)])
    res = rig.runner.run("transfer the cube", reviewer=reviewer)
    rig.result, rig.events = res, read_events(res.log_dir)
    assert res.success and res.replans == 1, res.message
    assert [(rev, moved) for rev, _, moved in reviewer.seen] == [(0, 0), (1, 0)]  # no motion before approval
    second = rig.wm.requests[1]
    assert "the left arm should take the cube first" in second.history[-1].reason  # the reason reaches the model
    kinds = [e["event"] for e in rig.events]
    assert kinds.count("awaiting_approval") == 2 and kinds.index("rejected") < kinds.index("approved") \
        < kinds.index("step_started")
    assert_log_matches_events(rig)


def test_review_timeout_or_a_broken_review_channel_aborts_without_motion(profile, tmp_path):
    from emu_ros.core.protocols import ReviewTimeout

    for error, expect in ((ReviewTimeout("nobody answered within 300 s"), "no approval: nobody answered"),
                          (OSError("review service gone"), "plan review failed (OSError: review service gone)")):
        rig = Rig(profile, tmp_path)
        res = rig.runner.run("transfer the cube", reviewer=ScriptedReviewer(rig, [error]))
        assert res.status == "aborted" and expect in res.message, res.message
        assert rig.adapter.trajectories == [] and rig.adapter.gripper_goals == []


class SlowWorldModel(FakeWorldModel):
    """A world model that needs `delay_s` per step, like a real one (~2 s per DiDA step)."""

    def __init__(self, steps, delay_s):
        super().__init__(steps)
        self.step_delay = delay_s

    def plan(self, request, cancel=None):
        from emu_ros.core.types import PlanStep

        self.requests.append(request)
        done = sum(1 for h in request.history if h.status is OutcomeStatus.FINISHED)
        for i, text in enumerate(self.steps[done:]):
            # past max_steps the next step shows at once (a real model reveals it with one token)
            if i < request.max_steps and cancel is not None and cancel.wait(self.step_delay):
                raise Cancelled("canceled")
            yield PlanStep(index=i, text=text, source=self.name)


def slow_rig(profile, tmp_path, mode, delay_s=0.3, steps=SEVEN_STEPS, **cfg):
    rig = Rig(profile, tmp_path, guidance_mode=mode, **cfg)
    rig.wm = SlowWorldModel(steps, delay_s)
    rig.engine.world_model = rig.wm
    return rig


def test_pipelined_starts_moving_at_the_first_step_and_executes_the_same_steps(profile, tmp_path):
    """pipelined: the arm starts when step 1 exists (not after all 7), in the same order, same result."""
    plan_rig = slow_rig(profile, tmp_path / "plan", "plan")
    plan_res = plan_rig.run()
    pipe_rig = slow_rig(profile, tmp_path / "pipe", "pipelined")
    pipe_res = pipe_rig.run()
    assert plan_res.success and pipe_res.success, (plan_res.message, pipe_res.message)
    assert [c.text for c in pipe_rig.executor.calls] == [c.text for c in plan_rig.executor.calls] == SEVEN_STEPS
    assert plan_res.first_motion_s >= 7 * 0.3 - 0.05  # plan mode waits for the whole plan
    assert pipe_res.first_motion_s < 0.3 + 0.25  # pipelined moves once the first step exists
    started = [e for e in pipe_rig.events if e["event"] == "step_started"]
    assert len(started) == 7 and all("idle_s" in e for e in started)
    assert read_summary(pipe_res.log_dir)["guidance_mode"] == "pipelined"
    assert_log_matches_events(pipe_rig)


def test_pipelined_replan_stops_the_streaming_plan_and_continues_from_the_history(profile, tmp_path):
    """A missed grasp while later steps are still being generated: that generation is stopped, the
    re-plan starts from the history, and no planning thread outlives the task."""
    rig = slow_rig(profile, tmp_path, "pipelined", delay_s=0.1)
    rig.adapter.grasp_misses = 1
    res = rig.run()
    assert res.success and res.replans == 1, res.message
    assert len(rig.wm.requests) == 2 and [h.text for h in rig.wm.requests[1].history][:2] == SEVEN_STEPS[:2]
    assert [c.text for c in rig.executor.calls].count(SEVEN_STEPS[2]) == 2  # the grasp, then its re-try by re-plan
    assert not [t for t in threading.enumerate() if t.name == "emu-plan-stream" and t.is_alive()]
    assert_log_matches_events(rig)


def test_pipelined_cancel_stops_the_generation(profile, tmp_path):
    rig = slow_rig(profile, tmp_path, "pipelined", delay_s=0.5)
    rig.rec.on_event = lambda e: rig.runner.cancel("operator stop") if e.type is EventType.STEP_FINISHED else None
    res = rig.run()
    assert res.status == "canceled" and res.steps_done == 1
    assert not [t for t in threading.enumerate() if t.name == "emu-plan-stream" and t.is_alive()]


def test_stepwise_asks_for_one_step_at_a_time_from_the_current_views(profile, tmp_path):
    """stepwise: one request per step, each after the previous step finished, with it in the history;
    the task ends when the world model ends its output after a step (never by a cut plan)."""
    rig = slow_rig(profile, tmp_path, "stepwise", delay_s=0.1)
    res = rig.run()
    assert res.success, res.message
    assert [c.text for c in rig.executor.calls] == SEVEN_STEPS
    assert [r.max_steps for r in rig.wm.requests] == [1] * 7
    assert [len(r.history) for r in rig.wm.requests] == list(range(7))  # each sees every finished step
    assert [r.observation is not None for r in rig.wm.requests] == [True] * 7  # planned from the views
    types = rig.rec.types()
    assert "replanning" not in types and "continuing" not in types
    started = [e for e in rig.events if e["event"] == "step_started"]
    assert len(started) == 7 and all(e["idle_s"] >= 0.09 for e in started)  # the arm waits ~1 step each
    assert res.first_motion_s < 0.1 + 0.25
    assert read_summary(res.log_dir)["guidance_mode"] == "stepwise"
    assert_log_matches_events(rig)


def test_stepwise_replans_after_a_missed_grasp_and_goes_on(profile, tmp_path):
    rig = slow_rig(profile, tmp_path, "stepwise", delay_s=0.0)
    rig.adapter.grasp_misses = 1
    res = rig.run()
    assert res.success and res.replans == 1, res.message
    assert rig.runner_replans() == 1  # the per-step requests after it are not re-plans
    assert [c.text for c in rig.executor.calls].count(SEVEN_STEPS[2]) == 2


def test_stepwise_aborts_when_the_world_model_never_ends_the_task(profile, tmp_path):
    rig = slow_rig(profile, tmp_path, "stepwise", delay_s=0.0, max_stepwise_steps=3)
    res = rig.run()
    assert res.status == "aborted" and res.steps_done == 3
    assert "has not ended the task (max_stepwise_steps=3)" in res.message
