"""CPU cost of the clear_table napkin models: the shipped two-panel hinged strip vs MuJoCo flexcomp cloths.

    python -m emu_ros.bench.napkin_models [--seconds 5] [--json FILE]

The same scene each time, with the napkin swapped: physics only (no rendering, arms holding still),
`--seconds` of simulated time at gym-aloha's 2 ms physics step. Prints ms per 50 Hz control tick
(10 physics steps), the mean number of contacts and the model size, and the ratio to the shipped
strip measured in the same run. Only the cost is measured here: a flex cloth's grasp behaviour
would need its own tuning, which this choice avoided.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def flexcomp_napkin(nx: int, ny: int) -> str:
    """A 20 x 5 cm flexcomp cloth of nx x ny vertices where the strip lies (10 g, edges as equalities)."""
    sx, sy = 0.20 / (nx - 1), 0.05 / (ny - 1)
    return (f'<flexcomp type="grid" count="{nx} {ny} 1" spacing="{sx:.4f} {sy:.4f} 0.01" pos="0.15 0.44 0.006" '
            f'radius="0.003" dim="2" name="napkin" mass="0.01"><edge equality="true" damping="0.01"/>'
            '<contact condim="3" solref="0.01 1" selfcollide="none"/></flexcomp>\n    ')


def scenes() -> dict:
    from emu_ros.sim.clear_table import scene_xml

    base = scene_xml()
    start, end = base.index('<body name="napkin"'), base.index('<body name="cup"')
    out = {"hinged strip (shipped)": base}
    for nx, ny in ((9, 3), (17, 5)):
        out[f"flexcomp {nx}x{ny}"] = base[:start] + flexcomp_napkin(nx, ny) + base[end:]
    return out


def measure(xml: str, seconds: float) -> dict:
    import mujoco

    from emu_ros.sim.clear_table import gym_aloha_assets

    m = mujoco.MjModel.from_xml_string(xml, gym_aloha_assets())
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    steps = int(round(seconds / m.opt.timestep))
    contacts = np.empty(steps)
    t0 = time.perf_counter()
    for k in range(steps):
        mujoco.mj_step(m, d)
        contacts[k] = d.ncon
    wall = time.perf_counter() - t0
    ticks = steps * m.opt.timestep / 0.02
    return {"ms_per_control_tick": round(wall / ticks * 1000, 3), "mean_contacts": round(float(contacts.mean()), 1),
            "nbody": int(m.nbody), "nv": int(m.nv), "sim_s": seconds}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="simulated seconds per model")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    rows = {}
    for name, xml in scenes().items():
        rows[name] = measure(xml, args.seconds)
    ref = rows["hinged strip (shipped)"]["ms_per_control_tick"]
    print(f"{'napkin model':<24} {'ms/tick':>8} {'x shipped':>9} {'contacts':>9} {'bodies':>7} {'dofs':>5}")
    for name, r in rows.items():
        r["ratio_to_shipped"] = round(r["ms_per_control_tick"] / ref, 2)
        print(f"{name:<24} {r['ms_per_control_tick']:>8.2f} {r['ratio_to_shipped']:>9.2f} {r['mean_contacts']:>9.1f} "
              f"{r['nbody']:>7} {r['nv']:>5}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
