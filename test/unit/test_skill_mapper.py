"""SkillMapper: the default library maps the usual phrasings and refuses to guess."""
from __future__ import annotations

import pytest

from emu_ros.bridge.skill_mapper import KNOWN_SKILLS, SkillLibraryError, SkillMapper


@pytest.fixture(scope="module")
def mapper():
    return SkillMapper.load()


@pytest.mark.parametrize("text, skill, arm, obj, location", [
    ("Move the right gripper above the red cube", "reach", "right", "cube", "above"),
    ("Grasp the red cube with the right gripper", "grasp", "right", "cube", None),
    ("Pick up the cup with the left hand", "grasp", "left", "cup", None),
    ("Lift the cube with the right arm to the meeting point between the arms", "lift", "right", "cube", "meet_point"),
    ("Place the cube on the table", "place", None, "cube", "table"),
    ("Put the cup in the bowl", "place", None, "cup", "bowl"),
    ("Release the cube with the right gripper", "release", "right", "cube", None),
    ("Open the right gripper to let go of the cube", "release", "right", "cube", None),
    ("Fold the left sleeve of the t-shirt", "fold", None, "sleeve", None),
    ("Push the cup to the right side", "push", None, "cup", "right_side"),
    ("Wipe the table with the towel", "wipe", None, "towel", None),
    ("Open the drawer", "open", None, "drawer", None),
    ("Close the drawer with the left arm", "close", "left", "drawer", None),
    ("Hand the cube over to the left arm", "handover", "left", "cube", None),
    ("Insert the peg into the socket with the right arm", "insert", "right", "peg", "socket"),
    ("Reach the cube with the left arm", "reach", "left", "cube", None),
])
def test_default_library_maps_common_phrasings(mapper, text, skill, arm, obj, location):
    r = mapper.map(text)
    assert r.mapped, r.reason
    c = r.call
    assert (c.skill, c.arm, c.obj, c.location) == (skill, arm, obj, location)
    assert c.text == text


def test_phrasing_params_and_numbers(mapper):
    c = mapper.map("Lower the right gripper 5 cm around the cube").call
    assert c.skill == "reach" and c.params["mode"] == "descend" and c.params["distance_m"] == pytest.approx(0.05)
    assert mapper.map("Return the left arm to the home position").call.params["mode"] == "retract"


def test_several_arms_are_all_reported(mapper):
    c = mapper.map("Move the left arm and the right arm to the middle").call
    assert c.arm == "left" and c.params["arms"] == ("left", "right")


@pytest.mark.parametrize("text, why", [
    ("Dance a little jig", "no skill phrasing matches"),
    ("", "empty step text"),
    ("Do not touch the cube", "negation"),
    ("Should I grasp the cube?", "question"),
    ("Place it down gently", "'place' needs a location or an object"),
    ("Fold it neatly", "'fold' needs an object"),
])
def test_unmapped_steps_say_why(mapper, text, why):
    r = mapper.map(text)
    assert not r.mapped and r.call is None
    assert why in r.reason


def test_every_known_skill_is_in_the_default_library(mapper):
    assert set(KNOWN_SKILLS) <= set(mapper.skill_names)


def test_sleeve_or_side_words_do_not_select_an_arm(mapper):
    assert mapper.map("Fold the left sleeve over the shirt").call.arm is None
    assert mapper.map("Push the cup to the left side").call.arm is None


@pytest.mark.parametrize("data, match", [
    ({"skills": []}, "no skills defined"),
    ({"skills": [{"name": "x", "phrasings": ["("]}]}, "invalid regex"),
    ({"skills": [{"name": "x", "phrasings": ["a"], "requires": ["colour"]}]}, "requires"),
    ({"skills": [{"name": "x", "phrasings": ["a"]}], "verbs": {}}, "unknown field"),
    ({"skills": [{"name": "x", "phrasings": ["a"]}], "objects": {"cube": [""]}}, "non-empty strings"),
    ({"skills": [{"name": "x"}]}, "has no phrasings"),
])
def test_library_errors(data, match):
    with pytest.raises(SkillLibraryError, match=match):
        SkillMapper(data)


def test_missing_library_file():
    with pytest.raises(SkillLibraryError, match="not found"):
        SkillMapper.load("no_such_library")


from hypothesis import given, settings  # noqa: E402

_MAPPER = SkillMapper.load()
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=120), st.lists(st.sampled_from(
    ["grasp", "the", "left", "right", "cube", "on", "table", "into", "socket", "open", "close", "hand", "over", "5",
     "cm", "degrees", "lift", "to", "meeting point", "don't", "?", "(", "\\", "*", "sleeve", "both"]),
    max_size=12).map(" ".join)))
def test_mapper_never_raises_and_never_guesses_a_skill_without_a_phrasing(text):
    mapper = _MAPPER
    r = mapper.map(text)
    assert r.mapped == (r.call is not None)
    if r.mapped:
        assert r.call.skill in mapper.skill_names and r.call.text == text
        assert r.call.arm in (None, "left", "right", "both")
    else:
        assert r.reason
