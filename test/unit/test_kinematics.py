"""Serial-chain kinematics on the sim_aloha chain: IK reaches FK of random in-limit configurations."""
from __future__ import annotations

import numpy as np
import pytest

from emu_ros.core.kinematics import SerialChain, rotation_error, rpy_to_matrix


@pytest.fixture(scope="module", params=["left_arm", "right_arm"])
def chain(request, profile):
    return SerialChain(profile.arm(request.param).chain)


def test_home_pose_matches_measured_gripper_position(profile):
    """sim-facts: at START_ARM_POSE the right gripper_link sits at (0.317, 0.5, 0.295) (tool offset removed)."""
    arm = profile.arm("right_arm")
    c = SerialChain(arm.chain)
    p, R = c.fk(arm.home)
    gripper_link = p - R @ np.array(arm.chain.tool_xyz)
    assert np.allclose(gripper_link, (0.317, 0.5, 0.295), atol=0.01)


def test_ik_reaches_fk_of_random_configurations(chain):
    rng = np.random.default_rng(0)
    lower = np.maximum(chain.lower, -2.0)
    upper = np.minimum(chain.upper, 2.0)
    solved = 0
    for _ in range(30):
        q = rng.uniform(lower * 0.6, upper * 0.6)
        p, R = chain.fk(q)
        q0 = np.clip(q + rng.normal(0, 0.3, q.shape), chain.lower, chain.upper)  # warm start nearby
        res = chain.ik(p, R, q0=q0, iterations=300)
        if res.ok:
            solved += 1
            p2, R2 = chain.fk(res.q)
            assert np.linalg.norm(p2 - p) < 5e-3
            assert np.linalg.norm(rotation_error(R2, R)) < 0.1
            assert np.all(res.q >= chain.lower - 1e-9) and np.all(res.q <= chain.upper + 1e-9)
    assert solved >= 27, f"IK solved only {solved}/30 reachable poses"


def test_position_only_ik_from_home(chain, profile):
    arm = next(a for a in profile.arms if a.chain.name == chain.spec.name)
    target = np.array(chain.fk(arm.home)[0]) + np.array([0.0, 0.05, -0.1])
    res = chain.ik(target, q0=arm.home)
    assert res.ok and res.position_error < 5e-3


def test_jacobian_matches_finite_differences(chain):
    q = np.array([0.2, -0.4, 0.5, 0.1, 0.3, -0.2])
    J = chain.jacobian(q)
    eps = 1e-6
    for i in range(chain.n):
        dq = np.zeros(chain.n)
        dq[i] = eps
        dp = (chain.fk(q + dq)[0] - chain.fk(q - dq)[0]) / (2 * eps)
        assert np.allclose(J[:3, i], dp, atol=1e-5)


def test_bad_inputs():
    from emu_ros.core.kinematics import ChainSpec, JointSpec

    with pytest.raises(ValueError, match="no joints"):
        SerialChain(ChainSpec("x", ()))
    with pytest.raises(ValueError, match="zero axis"):
        SerialChain(ChainSpec("x", (JointSpec("j", axis=(0, 0, 0)),)))
    c = SerialChain(ChainSpec("x", (JointSpec("j"),)))
    with pytest.raises(ValueError, match="expects 1 joint values"):
        c.fk([0.0, 1.0])
    assert np.allclose(rpy_to_matrix((0, 0, np.pi / 2)) @ [1, 0, 0], [0, 1, 0])
