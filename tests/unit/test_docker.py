"""docker/ cannot be built here (no Docker engine): parse the Dockerfile and check what matters."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_from_the_lock_and_runs_the_cli_as_non_root() -> None:
    instructions = _instructions()
    commands = [command for command, _ in instructions]
    runs = " ".join(argument for command, argument in instructions if command == "RUN")

    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert "uv sync --frozen --no-dev" in runs
    assert any(c == "COPY" and "uv.lock" in a for c, a in instructions)
    user = [argument for command, argument in instructions if command == "USER"]
    assert user and user[-1] not in {"root", "0"}
    assert commands.index("USER") > max(i for i, c in enumerate(commands) if c == "RUN")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert ("ENTRYPOINT", '["reviewgru"]') in instructions and "reviewgru" in scripts
    for copied in ("flows", "tasks"):
        assert (ROOT / copied).is_dir()
        assert any(c == "COPY" and a.startswith(f"{copied} ") for c, a in instructions)
