"""Planner bridge: step text -> skill -> arm goals, the step monitor and visual check, the task runner
that re-plans from the current view, the task log. Imports core, model, guidance (no ROS)."""
