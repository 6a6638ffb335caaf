"""Static check of the launch files, without the `launch` package (not installable from wheels).

The files are parsed with `ast`: every executable they start is installed, every file they point at
exists in an installed directory, every parameter they set (and every key of the parameter YAML)
is declared by the node, every LaunchConfiguration is declared, includes pass only declared
arguments, and `emu-ros run` flags used by sim.launch.py exist.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = sorted((REPO / "launch").glob("*.launch.py"))
NODE_SOURCES = {"emu_guidance": REPO / "emu_ros/ros/guidance_node.py", "emu_bridge": REPO / "emu_ros/ros/bridge_node.py"}
INSTALLED_DIRS = ("launch", "config", "rviz", "models")  # CMakeLists.txt install(DIRECTORY ...)


def declared_parameters(source: Path) -> set:
    """Names passed to declare(self, "<name>", ...) in a node module."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "declare" and len(node.args) >= 2:
            if isinstance(node.args[1], ast.Constant):
                names.add(node.args[1].value)
    return names


def calls(tree: ast.AST, name: str) -> list:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == name]


def kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def const(node) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def path_parts(call: ast.Call) -> list:
    """PathJoinSubstitution([share, "config", "x.yaml"]) → ["config", "x.yaml"] (the constant parts)."""
    lst = call.args[0] if call.args else None
    return [const(e) for e in getattr(lst, "elts", []) if isinstance(const(e), str)]


def installed_programs() -> set:
    cmake = (REPO / "CMakeLists.txt").read_text()
    block = re.search(r"install\(PROGRAMS(.*?)DESTINATION", cmake, re.S).group(1)
    return {Path(p).name for p in block.split()}


@pytest.fixture(scope="module")
def trees():
    return {p.name: ast.parse(p.read_text()) for p in LAUNCH}


def test_launch_files_exist():
    assert {p.name for p in LAUNCH} >= {"aloha.launch.py", "agibot.launch.py", "sim.launch.py", "emu_ros.launch.py"}


def test_every_launch_file_defines_generate_launch_description(trees):
    for name, tree in trees.items():
        funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert "generate_launch_description" in funcs, name


def test_executables_are_installed_and_exist(trees):
    programs = installed_programs()
    for name, tree in trees.items():
        for c in calls(tree, "Node") + calls(tree, "LifecycleNode"):
            if const(kw(c, "package")) != "emu_ros":
                continue
            exe = const(kw(c, "executable"))
            assert exe in programs, f"{name}: executable {exe!r} not installed by CMakeLists.txt install(PROGRAMS)"
            assert (REPO / "scripts" / exe).is_file(), f"{name}: scripts/{exe} missing"


def test_referenced_files_exist_in_installed_dirs(trees):
    for name, tree in trees.items():
        for c in calls(tree, "PathJoinSubstitution"):
            parts = path_parts(c)
            if not parts:
                continue
            assert parts[0] in INSTALLED_DIRS, f"{name}: {parts} is not under an installed directory {INSTALLED_DIRS}"
            assert (REPO.joinpath(*parts)).exists(), f"{name}: {'/'.join(parts)} does not exist"


def test_parameters_set_by_launch_files_are_declared(trees):
    for name, tree in trees.items():
        for c in calls(tree, "Node") + calls(tree, "LifecycleNode"):
            exe = const(kw(c, "executable"))
            if exe not in NODE_SOURCES:
                continue
            declared = declared_parameters(NODE_SOURCES[exe])
            params = kw(c, "parameters")
            for item in getattr(params, "elts", []):
                if isinstance(item, ast.Dict):
                    keys = {const(k) for k in item.keys}
                    assert keys <= declared, f"{name}: {exe} does not declare {sorted(keys - declared)}"


def test_params_yaml_keys_are_declared():
    data = yaml.safe_load((REPO / "config/emu_ros.yaml").read_text())
    assert set(data) == set(NODE_SOURCES)
    for node, body in data.items():
        keys = set(body["ros__parameters"])
        declared = declared_parameters(NODE_SOURCES[node])
        assert keys <= declared, f"config/emu_ros.yaml: {node} does not declare {sorted(keys - declared)}"
        assert declared <= keys, f"config/emu_ros.yaml lacks {node} parameters {sorted(declared - keys)} (document them all)"


def test_launch_configurations_are_declared_and_includes_pass_declared_arguments(trees):
    declared_by = {}
    for name, tree in trees.items():
        declared = {const(c.args[0]) for c in calls(tree, "DeclareLaunchArgument")}
        declared_by[name] = declared
        used = {const(c.args[0]) for c in calls(tree, "LaunchConfiguration")}
        assert used <= declared, f"{name}: LaunchConfiguration of undeclared {sorted(used - declared)}"
    for name, tree in trees.items():
        for inc in calls(tree, "IncludeLaunchDescription"):
            target = [p for c in calls(inc, "PathJoinSubstitution") for p in path_parts(c)][-1]
            assert target in declared_by, f"{name}: includes unknown {target}"
            args = kw(inc, "launch_arguments")
            passed = {const(k) for k in getattr(args.func.value, "keys", [])} if args is not None else set()
            assert passed <= declared_by[target], f"{name}: passes undeclared {sorted(passed - declared_by[target])}"
            for k, v in zip(args.func.value.keys, args.func.value.values):
                if const(k) == "profile":
                    assert (REPO / "config/robots" / f"{const(v)}.yaml").is_file(), f"{name}: no profile {const(v)}"


def test_emu_ros_run_flags_used_by_sim_launch_exist(trees):
    run_src = (REPO / "emu_ros/ros/run.py").read_text()
    flags = set(re.findall(r'add_argument\("(--[a-z-]+)"', run_src))
    for c in calls(trees["sim.launch.py"], "Node"):
        if const(kw(c, "executable")) == "emu-ros":
            args = [const(a) for a in kw(c, "arguments").elts]
            assert args[0] == "run"
            used = {a for a in args if isinstance(a, str) and a.startswith("--")}
            assert used <= flags, f"sim.launch.py passes unknown emu-ros run flags {sorted(used - flags)}"


def test_rviz_config_shows_steps_markers_and_camera():
    data = yaml.safe_load((REPO / "rviz/steps.rviz").read_text())
    topics = {d.get("Topic", {}).get("Value") for d in data["Visualization Manager"]["Displays"]}
    assert {"/emu_guidance/markers", "/emu_guidance/step_image", "/cam_high/camera/color/image_rect_raw"} <= topics
