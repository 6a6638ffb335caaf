#!/usr/bin/env bash
# The second CI job: the package built against the ROS 2 Jazzy wheels on Python 3.10 (what robots
# run), with its ROS-facing tests (test/unit, test/ros). `make test` runs it after the main suite.
# No torch there (the only local CPU wheel is cp311): model tests skip with that reason.
# Skips, saying why, when no Python 3.10 is installed; EMU_ROS_SKIP_JAZZY=1 skips it on purpose.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${EMU_ROS_SKIP_JAZZY:-0}" = 1 ]; then
  echo "[test_jazzy] skipped: EMU_ROS_SKIP_JAZZY=1"; exit 0
fi
if ! ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10.*/bin/python >/dev/null 2>&1 && ! command -v python3.10 >/dev/null; then
  echo "[test_jazzy] skipped: no Python 3.10 found (pyenv install 3.10, or set EMU_ROS_PYTHON)"; exit 0
fi
start=$(date +%s)
EMU_ROS_ROS=jazzy "$ROOT/scripts/setup_env.sh"
EMU_ROS_ROS=jazzy "$ROOT/scripts/run_tests.sh" test/unit test/ros -q
echo "[test_jazzy] Jazzy / Python 3.10 job passed in $(( $(date +%s) - start )) s"
