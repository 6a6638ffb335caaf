"""The profile's serial chains must match MuJoCo's forward kinematics (tool point = fingertip centre)."""
from __future__ import annotations

import numpy as np


def test_profile_chain_matches_mujoco_fk(profile):
    import mujoco
    from gym_aloha.constants import ASSETS_DIR

    from emu_ros.core.kinematics import SerialChain

    m = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / "bimanual_viperx_transfer_cube.xml"))
    d = mujoco.MjData(m)
    rng = np.random.default_rng(0)
    for arm_name, side, adr in (("left_arm", "left", 0), ("right_arm", "right", 8)):
        chain = SerialChain(profile.arm(arm_name).chain)
        body = m.body(f"vx300s_{side}/gripper_link").id
        for _ in range(50):
            q = rng.uniform(chain.lower * 0.95, chain.upper * 0.95)
            d.qpos[adr:adr + 6] = q
            mujoco.mj_kinematics(m, d)
            R_mj = d.xmat[body].reshape(3, 3)
            tip_mj = d.xpos[body] + R_mj @ np.array([0.1537, 0.0, 0.0])
            tip, R = chain.fk(q)
            assert np.linalg.norm(tip - tip_mj) < 0.002, (arm_name, q)
            assert np.abs(R - R_mj).max() < 1e-3


def test_home_pose_matches_sim_start(profile):
    from emu_ros.sim.aloha_env import AlohaSim

    sim = AlohaSim("transfer_cube")
    sim.reset(0)
    q = sim.qpos14()
    assert np.allclose(q[0:6], profile.arm("left_arm").home, atol=1e-6)
    assert np.allclose(q[7:13], profile.arm("right_arm").home, atol=1e-6)
