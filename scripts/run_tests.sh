#!/usr/bin/env bash
# Run the test suite inside the environment built by scripts/setup_env.sh.
# Default: everything except tests marked slow or lerobot. Extra args go to pytest, e.g.
#   scripts/run_tests.sh -m slow        (the slow tests)
#   scripts/run_tests.sh test/unit -q   (one directory)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -f "$ROOT/.venv/.emu_ros_ready" ] || { echo "[run_tests] environment not ready: run scripts/setup_env.sh first" >&2; exit 1; }
# shellcheck disable=SC1091
. "$ROOT/activate.sh"
cd "$ROOT"
# A private DDS domain per run so parallel runs (or a robot on the LAN) never cross-talk.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 90) + 10 ))}"
marker=(-m "not slow and not lerobot")
for a in "$@"; do [ "$a" = "-m" ] && marker=(); done
export EMU_ROS_REQUIRE_ROS=1
exec python -m pytest "${marker[@]}" "$@"
