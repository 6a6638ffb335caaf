"""The Fast DDS profile for processes that publish large images (camera frames, step images, plans).

Fast DDS's default shared-memory segment (512 KiB) is smaller than one 640x480 rgb8 frame, so such
samples go over UDP in ~64 KiB fragments and a best-effort image is lost whole when one fragment is
(measured: 21-219 of 301 frames per camera arrived; 301 of 301 with the shipped profile). The shipped
profile (config/dds/fastdds_large_images.xml) gives each process a 16 MiB segment. The segment is the
publisher's: our node executables apply it to themselves (below); a camera driver needs the same
export (README).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

from emu_ros.core.profile import config_dir

#: Fast DDS 3.x (Kilted and later) reads the first; 2.x (Humble, Jazzy) the second, and Kilted's rmw
#: warns on every participant when the second is set, so it is set only on the distros that read it.
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")


def large_image_profile() -> Path:
    return config_dir() / "dds" / "fastdds_large_images.xml"


def set_profile(path: str, environ: MutableMapping[str, str] = os.environ) -> None:
    """Point Fast DDS at `path` under the variable name(s) this ROS distro's Fast DDS reads."""
    environ[PROFILE_VARS[0]] = str(path)
    if environ.get("ROS_DISTRO", "") in FAST_DDS_2_DISTROS:
        environ[PROFILE_VARS[1]] = str(path)


def use_large_image_profile(environ: MutableMapping[str, str] = os.environ) -> str:
    """Call before rclpy.init: use the shipped profile unless one is chosen or another RMW runs.

    Returns one line for the node's log saying which profile is in effect and why.
    """
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw and "fastrtps" not in rmw:
        return f"RMW_IMPLEMENTATION={rmw}: the Fast DDS large-image profile does not apply"
    for var in PROFILE_VARS:
        if environ.get(var):
            return f"Fast DDS profile from {var}={environ[var]}"
    path = large_image_profile()
    if not path.is_file():
        return (f"Fast DDS large-image profile missing ({path}): images over 512 KiB go over UDP and may be "
                f"lost; reinstall the package or export FASTDDS_DEFAULT_PROFILES_FILE")
    set_profile(str(path), environ)
    return (f"Fast DDS profile {path} (16 MiB shared memory, so camera and step images are not fragmented "
            f"over UDP); export FASTDDS_DEFAULT_PROFILES_FILE to choose another")
