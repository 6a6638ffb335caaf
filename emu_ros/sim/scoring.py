"""Task success from the simulator's own reward: ground truth, used for scoring only.

gym-aloha rewards 0..4 every tick (contacts between fingers, objects and the table). Success is
the episode's maximum reward reaching 4 (the official metric; AlohaEnv terminates on it):
- transfer_cube: the left fingers touch the cube while it is off the table;
- insertion: the peg touches the pin inside the socket;
- clear_table (our scene): the reward counts the objects whose centre is inside the bin (0..4);
  success is all four.
Nothing in the closed loop (step checks, re-planning) may read this.
"""
from __future__ import annotations

from dataclasses import dataclass

from emu_ros.sim.aloha_env import AlohaSim

SUCCESS_REWARD = {"transfer_cube": 4.0, "insertion": 4.0, "clear_table": 4.0}


@dataclass(frozen=True)
class Score:
    task: str
    success: bool
    max_reward: float
    final_reward: float
    source: str = "simulator reward (ground truth, scoring only)"


#: Tasks scored on the state at the end (an object that fell into the bin and bounced out is not cleared),
#: not on the best moment of the episode.
FINAL_STATE = {"clear_table"}


def score(sim: AlohaSim) -> Score:
    need = SUCCESS_REWARD[sim.task_name]
    reached = sim.reward if sim.task_name in FINAL_STATE else sim.max_reward
    return Score(task=sim.task_name, success=reached >= need, max_reward=float(sim.max_reward),
                 final_reward=float(sim.reward))
