#!/usr/bin/env bash
# Run the test suite inside the environment built by scripts/setup_env.sh.
# Default: everything except tests marked slow or lerobot. Extra args go to pytest, e.g.
#   scripts/run_tests.sh -m slow        (the slow tests)
#   scripts/run_tests.sh test/unit -q   (one directory)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# EMU_ROS_ROS=jazzy: the Jazzy / Python 3.10 environment (EMU_ROS_ROS=jazzy scripts/setup_env.sh).
SUFFIX=""; [ "${EMU_ROS_ROS:-kilted}" = jazzy ] && SUFFIX="_jazzy"
VENV="$ROOT/.venv${SUFFIX/_/-}"
[ -f "$VENV/.emu_ros_ready" ] || { echo "[run_tests] environment not ready: run ${EMU_ROS_ROS:+EMU_ROS_ROS=$EMU_ROS_ROS }scripts/setup_env.sh first" >&2; exit 1; }
# shellcheck disable=SC1091
. "$ROOT/activate$SUFFIX.sh"
cd "$ROOT"
# Test-only stand-ins for control_msgs, interbotix_xs_msgs, aimdk_msgs (test/ros/interfaces/).
PYVER="$(python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
export PYTHONPATH="$ROOT/install_test$SUFFIX/lib/python$PYVER/site-packages:$PYTHONPATH"
export LD_LIBRARY_PATH="$ROOT/install_test$SUFFIX/lib:$LD_LIBRARY_PATH"
export AMENT_PREFIX_PATH="$ROOT/install_test$SUFFIX:$AMENT_PREFIX_PATH"
# A private DDS domain per run so parallel runs (or a robot on the LAN) never cross-talk.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 90) + 10 ))}"
marker=(-m "not slow and not lerobot")
for a in "$@"; do [ "$a" = "-m" ] && marker=(); done
export EMU_ROS_REQUIRE_ROS=1
exec python -m pytest "${marker[@]}" "$@"
