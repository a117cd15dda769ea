"""Dockerfiles read the way the engine reads them, for tests that check images without an engine."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    """One FROM … stage of a Dockerfile: base image, name (`AS name`), instructions in order."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ENV settings (`ENV A=1 B=2` form)."""
        return dict(word.split("=", 1) for args in self.all("ENV") for word in shlex.split(args) if "=" in word)

    def exec_form(self, keyword: str) -> list[str]:
        """The last CMD/ENTRYPOINT as words: the JSON (exec) form, or the shell form split."""
        found = self.all(keyword)
        if not found:
            return []
        return json.loads(found[-1]) if found[-1].startswith("[") else shlex.split(found[-1])

    def pip_commands(self) -> list[list[str]]:
        """The `pip …` (or `python -m pip …`) commands of the RUN lines, each `&&` part, as the words after pip."""
        found = []
        for run in self.all("RUN"):
            for part in run.split("&&"):
                words = shlex.split(part)
                words = words[words.index("pip") :] if "pip" in words[:3] else words  # after --mount=… options
                if words[:1] == ["pip"]:
                    found.append(words[1:])
                elif words[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
                    found.append(words[3:])
        return found


def dockerfile_stages(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments and parser directives dropped."""
    logical, pending = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for instruction in logical:
        keyword, _, args = instruction.partition(" ")
        if keyword.upper() == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            stages[-1].instructions.append((keyword.upper(), args.strip()))
    return stages
