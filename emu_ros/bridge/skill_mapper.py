"""SkillMapper: a step's text → one skill with its arguments, from a YAML skill library.

The world model speaks in short instructions ("Grasp the red cube with the right arm"); skills
need a verb and slots (arm, object, location). The mapping is deliberately conservative and
data-driven (`config/skills/default.yaml` documents the rules): a step it cannot map with every
required slot is reported as *unmapped* with the reason, which the runner turns into a re-plan
request — moving a robot on a guessed skill is worse than asking again.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

import yaml

from emu_ros.core.protocols import SkillCall

log = logging.getLogger(__name__)

#: Skills the default library provides (the SkillExecutor implements them).
KNOWN_SKILLS = ("reach", "grasp", "lift", "place", "release", "fold", "push", "wipe", "open", "close",
                "handover", "insert")
#: Spatial prepositions that start a location phrase (longest first).
PREPOSITIONS = ("next to", "on top of", "towards", "toward", "between", "beside", "inside", "above", "under", "onto",
                "into", "over", "near", "from", "at", "on", "in", "to")
_SLOTS = ("arm", "obj", "location", "location_or_obj")
_UNITS = {"mm": 0.001, "millimeter": 0.001, "millimeters": 0.001, "cm": 0.01, "centimeter": 0.01,
          "centimeters": 0.01, "m": 1.0, "meter": 1.0, "meters": 1.0}
_NUM_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(mm|millimeters?|cm|centimeters?|meters?|m|degrees?|deg)\b")


class SkillLibraryError(ValueError):
    """A skill library file is malformed; the message names the file and entry."""


@dataclass(frozen=True)
class Phrasing:
    """One compiled regex of a skill, with the fixed params it adds to the call."""

    pattern: re.Pattern
    params: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class SkillSpec:
    """A skill of the library: its phrasings (tried in order) and required slots."""

    name: str
    phrasings: tuple
    requires: tuple = ()


@dataclass(frozen=True)
class MappingResult:
    """A SkillCall, or why there is none (`reason`, and the skill whose verb matched if any)."""

    text: str
    call: Optional[SkillCall] = None
    reason: str = ""
    matched_skill: Optional[str] = None

    @property
    def mapped(self) -> bool:
        """True when the text became a SkillCall."""
        return self.call is not None


def _aliases(section: Mapping, name: str, where: str) -> List[Tuple[str, str]]:
    """Vocabulary → [(alias, canonical)] longest alias first, so "red cube" beats "cube"."""
    if not isinstance(section, Mapping):
        raise SkillLibraryError(f"{where}: '{name}' must be a mapping canonical -> [aliases]")
    out = []
    for canon, words in section.items():
        if isinstance(words, str):
            words = [words]
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise SkillLibraryError(f"{where}: {name}.{canon} must be a list of non-empty strings")
        out.extend((" ".join(w.lower().split()), str(canon)) for w in words)
    return sorted(out, key=lambda a: -len(a[0]))


def _compile(pattern: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise SkillLibraryError(f"{where}: invalid regex {pattern!r}: {e}") from None


class SkillMapper:
    """Maps step texts with one library; immutable after construction, so safe across threads."""

    def __init__(self, data: Mapping, source: str = "<dict>"):
        if not isinstance(data, Mapping):
            raise SkillLibraryError(f"{source}: a skill library must be a mapping")
        known = {"version", "reject", "arms", "objects", "locations", "skills"}
        unknown = set(data) - known
        if unknown:
            raise SkillLibraryError(f"{source}: unknown field(s) {sorted(unknown)} (known: {sorted(known)})")
        self.source = source
        self.reject = tuple(_compile(p, f"{source}: reject") for p in data.get("reject") or ())
        self.arms = _aliases(data.get("arms") or {}, "arms", source)
        self.objects = _aliases(data.get("objects") or {}, "objects", source)
        self.locations = _aliases(data.get("locations") or {}, "locations", source)
        skills = []
        for i, s in enumerate(data.get("skills") or ()):
            where = f"{source}: skills[{i}]"
            if not isinstance(s, Mapping) or not s.get("name"):
                raise SkillLibraryError(f"{where}: each skill needs a 'name' and 'phrasings'")
            bad = set(s) - {"name", "phrasings", "requires"}
            if bad:
                raise SkillLibraryError(f"{where}: unknown field(s) {sorted(bad)}")
            phr = []
            for p in s.get("phrasings") or ():
                if isinstance(p, str):
                    phr.append(Phrasing(_compile(p, where)))
                elif isinstance(p, Mapping) and "pattern" in p:
                    phr.append(Phrasing(_compile(str(p["pattern"]), where), dict(p.get("params") or {})))
                else:
                    raise SkillLibraryError(f"{where}: a phrasing is a regex string or {{pattern, params}}, got {p!r}")
            if not phr:
                raise SkillLibraryError(f"{where}: skill {s['name']!r} has no phrasings")
            req = tuple(s.get("requires") or ())
            if set(req) - set(_SLOTS):
                raise SkillLibraryError(f"{where}: requires {sorted(set(req) - set(_SLOTS))} not in {_SLOTS}")
            skills.append(SkillSpec(name=str(s["name"]), phrasings=tuple(phr), requires=req))
        if not skills:
            raise SkillLibraryError(f"{source}: no skills defined")
        self.skills = tuple(skills)

    @classmethod
    def load(cls, name_or_path: str = "default") -> "SkillMapper":
        """`default` → config/skills/default.yaml; a path is taken as it is."""
        p = Path(name_or_path)
        if p.suffix not in (".yaml", ".yml") and not p.exists():
            from emu_ros.core.profile import config_dir

            p = config_dir() / "skills" / f"{name_or_path}.yaml"
        if not p.is_file():
            raise SkillLibraryError(f"skill library {name_or_path!r} not found at {p}")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise SkillLibraryError(f"{p}: invalid YAML: {e}") from None
        return cls(data, str(p))

    @property
    def skill_names(self) -> tuple:
        """Skill names in matching order."""
        return tuple(s.name for s in self.skills)

    def map(self, text: str) -> MappingResult:
        """Map one step text; never raises on any string."""
        norm = " ".join(str(text or "").lower().replace("’", "'").split())
        if not norm:
            return MappingResult(text=str(text), reason="empty step text")
        for r in self.reject:
            if r.search(norm):
                return MappingResult(text=text, reason=f"step is a negation or a question (matched {r.pattern!r}); "
                                                        "not an executable instruction")
        for spec in self.skills:
            for ph in spec.phrasings:
                m = ph.pattern.search(norm)
                if m:
                    return self._fill(text, norm, spec, ph, m.start())
        return MappingResult(text=text, reason=f"no skill phrasing matches (skills: {', '.join(self.skill_names)}); "
                                               "add a phrasing to the skill library if this step is executable")

    # ---- slots -------------------------------------------------------------------------------
    def _fill(self, text: str, norm: str, spec: SkillSpec, ph: Phrasing, verb_at: int) -> MappingResult:
        taken: List[Tuple[int, int]] = []
        location, loc_span = self._location(norm, verb_at)
        if loc_span:
            taken.append(loc_span)
        obj = self._find(self.objects, norm, taken, after=verb_at) or self._find(self.objects, norm, taken)
        if obj:
            taken.append(obj[1])
        arms = self._find_all(self.arms, norm, taken)
        missing = []
        for slot in spec.requires:
            if slot == "obj" and not obj:
                missing.append("an object")
            elif slot == "location" and not location:
                missing.append("a location")
            elif slot == "arm" and not arms:
                missing.append("an arm (left/right)")
            elif slot == "location_or_obj" and not (location or obj):
                missing.append("a location or an object")
        if missing:
            return MappingResult(text=text, matched_skill=spec.name,
                                 reason=f"'{spec.name}' needs {' and '.join(missing)}, none found in the step text "
                                        f"(known objects: {sorted({c for _, c in self.objects})}; "
                                        f"locations: {sorted({c for _, c in self.locations})})")
        params = dict(ph.params)
        params.update(_numbers(norm))
        if len(arms) > 1:
            params["arms"] = tuple(arms)
        call = SkillCall(skill=spec.name, text=text, arm=arms[0] if arms else None,
                         obj=obj[0] if obj else None, location=location, params=params)
        return MappingResult(text=text, call=call, matched_skill=spec.name)

    def _location(self, norm: str, verb_at: int) -> Tuple[Optional[str], Optional[Tuple[int, int]]]:
        """First location alias at or after the first spatial preposition following the verb."""
        starts = [m.start() for p in PREPOSITIONS for m in re.finditer(rf"\b{re.escape(p)}\b", norm) if m.start() >= verb_at]
        if not starts:
            return None, None
        found = self._find(self.locations, norm, [], after=min(starts))
        return (found[0], found[1]) if found else (None, None)

    @staticmethod
    def _find(vocab: Sequence, norm: str, taken: Sequence, after: int = 0):
        """The earliest (then longest) alias occurrence at or after `after`, outside `taken` spans."""
        best = None
        for alias, canon in vocab:
            for m in re.finditer(rf"(?<![\w-]){re.escape(alias)}(?![\w-])", norm):
                s, e = m.start(), m.end()
                if s < after or any(s < te and ts < e for ts, te in taken):
                    continue
                if best is None or s < best[1][0] or (s == best[1][0] and e > best[1][1]):
                    best = (canon, (s, e))
                break
        return best

    def _find_all(self, vocab: Sequence, norm: str, taken: Sequence) -> List[str]:
        """Canonical names of every alias occurrence (in text order, no duplicates), outside `taken`."""
        hits = []
        spans = list(taken)
        while True:
            found = self._find(vocab, norm, spans)
            if not found:
                break
            spans.append(found[1])
            hits.append(found)
        out = []
        for canon, _ in sorted(hits, key=lambda h: h[1][0]):
            if canon not in out:
                out.append(canon)
        return out


def _numbers(norm: str) -> dict:
    """Distances and angles written in the step ("lift 8 cm", "rotate 90 degrees") as SI params."""
    out = {}
    for value, unit in _NUM_RE.findall(norm):
        v = float(value)
        if unit.startswith("deg"):
            out.setdefault("angle_rad", math.radians(v))
        elif unit in _UNITS:
            out.setdefault("distance_m", v * _UNITS[unit])
    return out
