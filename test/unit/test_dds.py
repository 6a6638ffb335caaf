"""The Fast DDS large-image profile: applied only when nobody chose one, and the file is a valid profile."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from emu_ros.ros.dds import PROFILE_VARS, large_image_profile, use_large_image_profile

NS = {"f": "http://www.eprosima.com"}


def test_profile_is_applied_only_when_none_is_chosen():
    env = {}
    note = use_large_image_profile(env)
    assert env == {PROFILE_VARS[0]: str(large_image_profile())} and "16 MiB" in note  # Fast DDS 3 only
    jazzy = {"ROS_DISTRO": "jazzy"}
    use_large_image_profile(jazzy)
    assert jazzy[PROFILE_VARS[0]] == jazzy[PROFILE_VARS[1]] == str(large_image_profile())  # 2.x reads the old name
    mine = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/my.xml"}
    assert "FASTRTPS_DEFAULT_PROFILES_FILE=/etc/my.xml" in use_large_image_profile(mine)
    assert mine == {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/my.xml"}  # the user's choice wins, untouched
    cyclone = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert "does not apply" in use_large_image_profile(cyclone) and set(cyclone) == {"RMW_IMPLEMENTATION"}


def test_shipped_profile_gives_a_segment_larger_than_a_camera_frame():
    root = ET.parse(large_image_profile()).getroot()
    shm = [t for t in root.iterfind("f:transport_descriptors/f:transport_descriptor", NS)
           if t.findtext("f:type", namespaces=NS) == "SHM"]
    assert shm and int(shm[0].findtext("f:segment_size", namespaces=NS)) >= 8 * 640 * 480 * 3
    participant = root.find("f:participant", NS)
    assert participant.get("is_default_profile") == "true"
    used = {t.text for t in participant.iterfind("f:rtps/f:userTransports/f:transport_id", NS)}
    assert used == {t.findtext("f:transport_id", namespaces=NS) for t in root.iterfind(
        "f:transport_descriptors/f:transport_descriptor", NS)}, "every declared transport is used"
    assert participant.findtext("f:rtps/f:useBuiltinTransports", namespaces=NS) == "false"
