"""Fine-tune the Emu3.5 world model on LeRobot datasets: read -> segment into steps -> token samples -> train.

Modules (data pipeline first, training loop last, as in lerobot's separation of config / data / loop):
``dataset`` (LeRobot v3.0 reader), ``writer`` (v3.0 writer), ``segment`` (step segmentation), ``preview``
(storyboard CLI), ``make_sim_dataset`` (demo data CLI), ``samples`` (interleaved Emu3.5 sequences),
``train`` (training CLI).
"""
