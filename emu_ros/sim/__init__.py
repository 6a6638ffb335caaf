"""Simulated bimanual ALOHA (gym-aloha physics via dm_control, MuJoCo) for the closed loop without a robot.

- `aloha_env`: `AlohaSim` (TransferCube / Insertion / ClearTable, no per-step rendering, on-demand offscreen
  cameras under the real profile's names), `SimImageSource` (ImageSource, camera dropout),
  `SimCameraStreamer` (renders subscribed cameras at a rate for a publisher).
- `adapter`: `SimRobotAdapter` (RobotAdapter: 50 Hz trajectory interpolation on the position
  servos, measured outcome codes, thread-safe).
- `clear_table`: our table-clearing scene (napkin strip, cup, spoon, sponge, bin) on gym-aloha's arms.
- `perception`: `GroundTruthPerception` (labelled ground-truth oracle for object poses).
- `tasks`, `faults`, `scoring`: task definitions and reference step images, seeded fault
  injection, success from the simulator's reward (scoring only).
- `episode`, `evaluate`: one seeded closed-loop episode through the bridge's TaskRunner +
  StepMonitor (the one loop the nodes run) and `emu-ros eval`.

Nothing heavy is imported here, so `import emu_ros.sim` works without gym-aloha installed.
"""
