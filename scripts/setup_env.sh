#!/usr/bin/env bash
# Build the emu_ros development environment on a machine without ROS or a GPU:
#   .venv/            Python venv: torch 2.13.0 (CPU wheel), the ROS 2 community wheels, sim + test deps
#   build/ install/   colcon build of this package (interfaces + Python), symlinked to the sources
#   activate.sh       one file to source: PATH, PYTHONPATH, LD_LIBRARY_PATH, AMENT_PREFIX_PATH
# Idempotent: a second run with nothing changed takes a few seconds. Every step says what it does;
# any failure stops with the step named, and the environment is never marked ready half-built.
#
# Usage: scripts/setup_env.sh            (from anywhere)
#        EMU_ROS_PYTHON=python3.12 scripts/setup_env.sh   (choose the interpreter, >= 3.10)
#        EMU_ROS_ROS=jazzy scripts/setup_env.sh   (the robots' ROS: Jazzy wheels on Python 3.10, in
#            .venv-jazzy/, build_jazzy/, install_jazzy/, activate_jazzy.sh; no torch: the only local
#            CPU torch wheel is cp311, so the model tests skip there and the ROS-facing ones run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Which ROS 2 wheels: kilted (default, Python >= 3.10 as given) or jazzy (Python 3.10, what robots run).
FLAVOR="${EMU_ROS_ROS:-kilted}"
CONSTRAINTS=()
case "$FLAVOR" in
  kilted) SUFFIX=""; REQ_ROS="$ROOT/scripts/requirements-ros.txt"; WITH_TORCH=1; DEFAULT_PY=python3 ;;
  jazzy) SUFFIX="_jazzy"; REQ_ROS="$ROOT/scripts/requirements-ros-jazzy.txt"; WITH_TORCH=0
         CONSTRAINTS=(-c "$ROOT/scripts/constraints-jazzy.txt")
         DEFAULT_PY="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10.*/bin/python 2>/dev/null | tail -n 1)"
         DEFAULT_PY="${DEFAULT_PY:-python3.10}" ;;
  *) printf '[setup_env] ERROR: EMU_ROS_ROS must be kilted or jazzy, got %s\n' "$FLAVOR" >&2; exit 2 ;;
esac
VENV="$ROOT/.venv${SUFFIX/_/-}"
BUILD="$ROOT/build$SUFFIX"; INSTALL="$ROOT/install$SUFFIX"; INSTALL_TEST="$ROOT/install_test$SUFFIX"
LOGS="$ROOT/log$SUFFIX"; ACTIVATE="$ROOT/activate$SUFFIX.sh"
READY="$VENV/.emu_ros_ready"
STEP="start"
say() { printf '[setup_env] %s\n' "$*"; }
fail() { printf '[setup_env] ERROR: %s\n' "$*" >&2; rm -f "$READY"; exit 1; }
trap 'rc=$?; if [ $rc -ne 0 ]; then printf "[setup_env] FAILED during step: %s (exit %s). The environment is NOT ready; fix the error above and re-run %s\n" "$STEP" "$rc" "$0" >&2; rm -f "$READY"; fi' EXIT

cd "$ROOT"

# ---------------------------------------------------------------- 1. tools the build needs
STEP="check build tools"
PY="${EMU_ROS_PYTHON:-$DEFAULT_PY}"
command -v "$PY" >/dev/null 2>&1 || fail "no '$PY' interpreter found; install Python >= 3.10 or set EMU_ROS_PYTHON"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || fail "$("$PY" --version 2>&1) is too old: emu_ros needs Python >= 3.10"
"$PY" -c 'import venv, ensurepip' 2>/dev/null || fail "'$PY' lacks venv/ensurepip (Debian: apt-get install python3-venv)"
missing=()
for tool in cmake gcc g++ make; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing missing build tools with apt-get: ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq cmake g++ make >/dev/null \
      || fail "apt-get could not install ${missing[*]}; install them and re-run"
  else
    fail "missing build tools: ${missing[*]} (needed to generate the ROS interfaces); install them (Debian: apt-get install cmake g++ make) and re-run"
  fi
fi
# MuJoCo renders offscreen through EGL (Mesa llvmpipe works without a GPU).
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing EGL (Mesa) for offscreen simulator rendering"
    apt-get update -qq && apt-get install -y -qq libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri >/dev/null \
      || fail "apt-get could not install libegl1/libgl1-mesa-dri; the simulator cannot render"
  else
    say "WARNING: libEGL not found: simulator camera rendering will fail (Debian: apt-get install libegl1 libgl1-mesa-dri)"
  fi
fi

# ---------------------------------------------------------------- 2. the virtual environment
STEP="create venv"
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  say "existing .venv is broken; recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check -q)

# Requirements change → reinstall; otherwise skip pip entirely (the warm path).
STEP="install Python packages"
req_hash="$(cat "$ROOT/scripts/requirements-dev.txt" "$REQ_ROS" "$ROOT/setup.py" "$0" ${CONSTRAINTS[1]:+"${CONSTRAINTS[1]}"} \
  | sha256sum | cut -c1-16)"
stamp="$VENV/.emu_ros_requirements.$req_hash"
# A stamp only counts if the key packages really import (an interrupted or tampered install).
KEY_IMPORTS="numpy, yaml, rclpy, mujoco, gym_aloha, safetensors, tiktoken, pyarrow, av, colcon_core"
[ "$WITH_TORCH" = 1 ] && KEY_IMPORTS="torch, $KEY_IMPORTS"
if [ -f "$stamp" ] && ! "$VPY" -c "import $KEY_IMPORTS" >/dev/null 2>&1; then
  say "packages recorded as installed do not import: reinstalling"
  rm -f "$stamp"
fi
if [ ! -f "$stamp" ]; then
  rm -f "$VENV"/.emu_ros_requirements.* "$READY"
  if [ "$WITH_TORCH" = 1 ]; then
    say "installing torch 2.13.0 (CPU wheel; never an unpinned torch, which pulls several GB of CUDA)"
    "${PIP[@]}" install "torch==2.13.0" || fail "pip could not install torch==2.13.0"
    say "installing core, simulation and test packages (scripts/requirements-dev.txt)"
    "${PIP[@]}" install -r "$ROOT/scripts/requirements-dev.txt" "torch==2.13.0" || fail "pip install -r scripts/requirements-dev.txt failed"
  else
    # No local CPU torch wheel for this Python: the model stack (torch, transformers, peft, accelerate)
    # is left out; its tests skip with that reason, the ROS-facing ones run. setuptools: a fresh venv's
    # is too old for the editable install below.
    say "installing core, simulation and test packages without the model stack (no CPU torch wheel here)"
    grep -vE '^(transformers|peft|accelerate)' "$ROOT/scripts/requirements-dev.txt" > "$VENV/requirements-no-torch.txt"
    "${PIP[@]}" install "${CONSTRAINTS[@]}" -r "$VENV/requirements-no-torch.txt" "setuptools==79.0.1" \
      || fail "pip install of the dev requirements failed"
  fi
  say "installing ROS 2 wheels and interface generators ($(basename "$REQ_ROS"))"
  "${PIP[@]}" install "${CONSTRAINTS[@]}" -r "$REQ_ROS" || fail "pip install -r $REQ_ROS failed"
  say "installing emu_ros itself in editable mode (console script emu-ros)"
  "${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT" || fail "pip install -e . failed"
  touch "$stamp"
else
  say "Python packages up to date (requirements unchanged)"
fi
if [ "$WITH_TORCH" = 1 ]; then
  "$VPY" -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__' \
    || fail "torch in .venv is not 2.13.0 (another package upgraded it?); delete .venv and re-run"
fi

# ---------------------------------------------------------------- 3. fix paths baked into the ROS wheels
# The wheels were built under /opt/python/cp311-cp311 and carry that prefix in ~90 CMake/ament
# files; CMake refuses imported targets whose include dirs do not exist. Rewrite to this venv.
STEP="rewrite ROS wheel paths"
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
PYINC="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NPINC="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
PYVER="$("$VPY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
PYTAG="cp${PYVER/./}"
OLD="/opt/python/$PYTAG-$PYTAG"  # where the wheels were built
# CMake rejects exported include dirs inside the source tree, and this repository (the package) holds
# .venv: reach numpy's headers through a link outside it.
LINKDIR="${XDG_CACHE_HOME:-$HOME/.cache}/emu_ros/$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
mkdir -p "$LINKDIR" && ln -sfn "$NPINC" "$LINKDIR/numpy_include"
NPLINK="$LINKDIR/numpy_include"
mapfile -t baked < <(grep -rIlE "$OLD|$NPINC" "$VENV/share" "$VENV/lib/cmake" 2>/dev/null || true)
if [ ${#baked[@]} -gt 0 ]; then
  say "rewriting build-machine paths in ${#baked[@]} ROS wheel files"
  sed -i \
    -e "s#$OLD/lib/python$PYVER/site-packages/numpy/_core/include#$NPLINK#g" \
    -e "s#$NPINC#$NPLINK#g" \
    -e "s#$OLD/include/python$PYVER#$PYINC#g" \
    -e "s#$OLD/lib/python$PYVER/site-packages#$SITE#g" \
    -e "s#$OLD/bin/python$PYVER#$VPY#g" \
    -e "s#$OLD#$VENV#g" "${baked[@]}"
fi
[ -d "$PYINC" ] && [ -f "$PYINC/Python.h" ] || fail "Python headers not found at $PYINC (Debian: apt-get install python3-dev)"
ROS_LD="$("$VPY" -c 'import ros_wheels_bootstrapper as b; print(b.get_ros_paths())')" \
  || fail "ros_wheels_bootstrapper missing: the ROS wheels did not install"

# ---------------------------------------------------------------- 4. build the package with colcon
STEP="colcon build"
touch "$VENV/COLCON_IGNORE"; mkdir -p "$LOGS"
say "building emu_ros (interfaces + Python) with colcon into $(basename "$INSTALL")/"
(
  export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" LD_LIBRARY_PATH="$ROS_LD" _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
  export PATH="$VENV/bin:$PATH"
  "$VENV/bin/colcon" --log-base "$LOGS" build --paths "$ROOT" --build-base "$BUILD" \
    --install-base "$INSTALL" --merge-install --symlink-install \
    --cmake-args -DPython3_EXECUTABLE="$VPY" -DPython3_FIND_STRATEGY=LOCATION -DPython3_NumPy_INCLUDE_DIR="$NPLINK" -DBUILD_TESTING=OFF \
    --event-handlers console_direct- summary- > "$LOGS/colcon_build.txt" 2>&1 \
    || { tail -n 40 "$LOGS/colcon_build.txt" >&2; exit 1; }
) || fail "colcon build failed (full log: log/colcon_build.txt)"

# Test-only stand-ins for control_msgs / interbotix_xs_msgs / aimdk_msgs (not on PyPI), built into a
# separate prefix that only scripts/run_tests.sh puts on the path (test/ros/interfaces/README.md).
STEP="colcon build (test-only interfaces)"
(
  export AMENT_PREFIX_PATH="$INSTALL:$VENV" CMAKE_PREFIX_PATH="$INSTALL:$VENV" LD_LIBRARY_PATH="$ROS_LD" _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
  export PATH="$VENV/bin:$PATH"
  "$VENV/bin/colcon" --log-base "$LOGS" build --paths "$ROOT"/test/ros/interfaces/* --build-base "$BUILD/test_interfaces" \
    --install-base "$INSTALL_TEST" --merge-install \
    --cmake-args -DPython3_EXECUTABLE="$VPY" -DPython3_FIND_STRATEGY=LOCATION -DPython3_NumPy_INCLUDE_DIR="$NPLINK" -DBUILD_TESTING=OFF \
    --event-handlers console_direct- summary- > "$LOGS/colcon_build_test_interfaces.txt" 2>&1 \
    || { tail -n 40 "$LOGS/colcon_build_test_interfaces.txt" >&2; exit 1; }
) || fail "building the test-only interfaces failed (log/colcon_build_test_interfaces.txt)"

# The real ROS 2 `launch`/`launch_ros`/`launch_testing` (not on PyPI) from the team's vendored sources,
# for the launch-file tests (test/launch). A fresh clone without ../shared skips this, and those tests
# skip with that reason; where ../shared is present (CI) a failure here stops the setup.
STEP="ros2 launch libraries (../shared/tools/install_ros2_launch.sh)"
LAUNCH_TOOL="$ROOT/../shared/tools/install_ros2_launch.sh"
if [ "$FLAVOR" != kilted ]; then
  say "skipped ros2 launch libraries for $FLAVOR (the launch tests run in the default environment)"
elif [ -f "$LAUNCH_TOOL" ]; then
  say "installing ros2 launch from ../shared/vendor/ros2 into the venv (+ composition_interfaces in install_launch/)"
  last="$(bash "$LAUNCH_TOOL" "$VENV" "$ROOT/install_launch" | tail -n 1)"
  say "$last"
  case "$last" in "ros2 launch ready"*) ;; *) fail "$last";; esac
else
  rm -f "$ROOT/install_launch/env.sh"
  say "skipped ros2 launch libraries: ../shared/tools/install_ros2_launch.sh absent (test/launch will skip)"
fi

# ---------------------------------------------------------------- 5. the activation file
STEP="write activate.sh"
INSTALL_SITE="$INSTALL/lib/python$PYVER/site-packages"
cat > "$ACTIVATE" <<EOF
# Generated by scripts/setup_env.sh: source it to use emu_ros from this checkout.
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:\$PATH"
export PYTHONPATH="$INSTALL_SITE\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="$INSTALL/lib:$ROS_LD"
export AMENT_PREFIX_PATH="$INSTALL:$VENV"
export CMAKE_PREFIX_PATH="$INSTALL:$VENV"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export RMW_IMPLEMENTATION="\${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="\${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export MUJOCO_GL="\${MUJOCO_GL:-egl}"
EOF
if [ "$FLAVOR" = kilted ]; then
  { echo "# ros2 launch libraries (only where ../shared provided them)"
    echo "if [ -f \"$ROOT/install_launch/env.sh\" ]; then . \"$ROOT/install_launch/env.sh\"; fi"; } >> "$ACTIVATE"
fi

# ---------------------------------------------------------------- 6. smoke check, then mark ready
STEP="smoke check"
(
  # shellcheck disable=SC1091
  . "$ACTIVATE"
  cd "$ROOT"
  EMU_ROS_WITH_TORCH="$WITH_TORCH" python - <<'PYEOF'
from emu_ros.action import ExecuteTask, GeneratePlan
from emu_ros.msg import Plan, PlanStep, StepRecord
from emu_ros.srv import ReviewPlan
import emu_ros.core.types, emu_ros.core.protocols
import os
import rclpy, mujoco
torch = "not installed (no CPU wheel for this Python)"
if os.environ.get("EMU_ROS_WITH_TORCH") == "1":
    import torch as _torch
    torch = _torch.__version__
print(f"[setup_env] ok: rclpy {rclpy.get_rmw_implementation_identifier() if hasattr(rclpy, 'get_rmw_implementation_identifier') else ''}, torch {torch}, mujoco {mujoco.__version__}")
PYEOF
) || fail "the built environment does not import (see above)"
touch "$READY"
say "environment ready ($FLAVOR): source $ACTIVATE"
