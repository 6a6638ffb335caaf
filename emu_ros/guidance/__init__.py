"""Guidance: the engine that turns task + history + current camera views into plan steps, the step
parser, and the world-model backends (Emu3.5 AR/DiDA, scripted reference). Imports core and model only."""
