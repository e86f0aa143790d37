"""docker/ cannot be built here (no Docker engine): parse its files and check what matters."""

import re
import tomllib
from pathlib import Path

import yaml
from typer.testing import CliRunner

from flows.cli import app

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


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def test_compose_runs_the_team_stack_with_healthchecks_on_localhost_ports() -> None:
    services = _compose()["services"]

    assert set(services) == {"postgres", "prefect-server", "mlflow", "worker"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    assert (
        "postgresql+asyncpg://"
        in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    assert any("--backend-store-uri=postgresql" in arg for arg in services["mlflow"]["command"])
    assert {"pgdata", "mlflow-artifacts", "work"} <= set(_compose()["volumes"])
    assert services["worker"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_compose_secrets_come_from_env_and_the_worker_runs_a_real_command() -> None:
    text = (ROOT / "docker" / "compose.yaml").read_text()
    example = (ROOT / "docker" / ".env.example").read_text()
    used = set(re.findall(r"\$\{(\w+)\}", text))
    defined = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line}

    assert used <= defined
    assert "POSTGRES_PASSWORD" in used and "change-me" not in text
    worker = _compose()["services"]["worker"]["command"]
    result = CliRunner().invoke(app, [worker[0], "--help"])
    assert result.exit_code == 0
    options = set(re.findall(r"--[a-z-]+", result.output))
    assert {arg for arg in worker if arg.startswith("--")} <= options
