"""deploy/docker-compose.yml: a fleet provisioned with the command its header gives, then the compose file checked
by ``docker compose config`` (or docker-compose v1) and against the files it mounts, builds and reads."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from iotfl.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
SERVICES = {"mosquitto", "postgres", "cloud", "gateway", "fleet"}


def provision_command() -> list[str]:
    """The ``iotfl provision fleet …`` of the compose file's header comment, continuation lines joined."""
    header = "".join(line.lstrip("# ").rstrip("\\") for line in COMPOSE.read_text().splitlines() if line[:1] == "#")
    match = re.search(r"iotfl (provision fleet .*?)docker compose", header)
    assert match, "the compose header must say how to provision its fleet"
    return shlex.split(match.group(1))


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fleet provisioned exactly as the header says, written to a temp folder instead of deploy/fleet."""
    pytest.importorskip("cryptography", reason="provisioning needs the provision extra: pip install 'iotfl[provision]'")
    out = tmp_path_factory.mktemp("compose") / "fleet"
    args = provision_command()
    args[args.index("--out") + 1] = str(out)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def compose_tool() -> list[str] | None:
    """``docker compose`` (the v2 plugin) or ``docker-compose`` (v1), whichever runs here."""
    candidates = (["docker", "compose"], ["docker-compose"])
    for cmd in candidates:
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return cmd
    return None


def compose_config(tool: list[str], fleet: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IOTFL_FLEET_DIR": str(fleet)}
    return subprocess.run(
        [*tool, "-f", str(COMPOSE), "config", *extra], capture_output=True, text=True, env=env, timeout=120
    )


def test_docker_compose_validates_the_file(fleet_dir: Path) -> None:
    tool = compose_tool()
    if tool is None:
        pytest.skip("neither `docker compose version` nor `docker-compose version` runs here: compose not validated")
    quiet = compose_config(tool, fleet_dir, "--quiet")
    assert quiet.returncode == 0 and not quiet.stdout, quiet.stderr
    resolved = yaml.safe_load(compose_config(tool, fleet_dir).stdout)
    assert set(resolved["services"]) == SERVICES
    # the provisioned secrets reach the services through their env files, not through the compose file
    assert resolved["services"]["gateway"]["environment"]["IOTFL_ID"] == "gw0"
    assert resolved["services"]["cloud"]["environment"]["IOTFL_GATEWAY_TOKEN_HASHES"].startswith("gw0=")
    assert resolved["services"]["cloud"]["environment"]["IOTFL_DB"].startswith("postgresql://")


def test_docker_compose_refuses_a_missing_fleet(tmp_path: Path) -> None:
    tool = compose_tool()
    if tool is None:
        pytest.skip("neither `docker compose version` nor `docker-compose version` runs here: compose not validated")
    result = compose_config(tool, tmp_path / "not-provisioned", "--quiet")
    assert result.returncode != 0 and "cloud.env" in result.stderr


def spec() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def substitute(text: str, fleet: Path) -> str:
    return text.replace("${IOTFL_FLEET_DIR:-./fleet}", str(fleet))


def host_path(source: str, fleet: Path) -> Path:
    return (COMPOSE.parent / substitute(source, fleet)).resolve()


def test_every_file_the_services_reference_exists(fleet_dir: Path) -> None:
    services = spec()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        for env_file in service.get("env_file", []):
            assert host_path(env_file, fleet_dir).is_file(), f"{name}: env file {env_file}"
        for volume in service.get("volumes", []):
            source = substitute(volume, fleet_dir).split(":")[0]
            if "/" in source:  # a bind mount, not a named volume
                assert host_path(source, fleet_dir).exists(), f"{name}: mount {source}"
            else:
                assert source in spec()["volumes"], f"{name}: undeclared volume {source}"
        if "build" in service:
            context = (COMPOSE.parent / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file() and (context / "pyproject.toml").is_file()
    # mosquitto copies the provisioned config, logins and ACL, and the config finds them where they are copied to
    mosquitto = " ".join(services["mosquitto"]["command"])
    conf = (fleet_dir / "mosquitto" / "iotfl.conf").read_text()
    for name in ("passwd", "acl", "iotfl.conf"):
        assert f"/fleet/mosquitto/{name}" in mosquitto and (fleet_dir / "mosquitto" / name).is_file()
    assert "password_file /mosquitto/config/passwd" in conf and "acl_file /mosquitto/config/acl" in conf
    # the gateway's key file path (from its env file) lies inside what is mounted for it
    gateway_env = (fleet_dir / "gateways" / "gw0" / "gateway.env").read_text()
    keys = re.search(r"^IOTFL_DEVICE_KEYS=(.*)$", gateway_env, re.M)
    assert keys and keys.group(1) == "/etc/iotfl/gateways/gw0/device-keys.json"
    assert any(substitute(v, fleet_dir).split(":")[1] == "/etc/iotfl/gateways" for v in services["gateway"]["volumes"])


def extras_closure(names: str) -> set[str]:
    """Every requirement an install of ``iotfl[names]`` pulls from pyproject.toml (self-references followed)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras, todo, reqs = project["optional-dependencies"], names.split(","), set(project["dependencies"])
    seen: set[str] = set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in extras[extra]:
            inner = re.fullmatch(r"iotfl\[(.*)\]", req)
            if inner:
                todo.extend(inner.group(1).split(","))
            else:
                reqs.add(req)
    return reqs


@pytest.mark.parametrize("service", ["gateway", "cloud"])
def test_gateway_and_cloud_images_carry_no_torch(service: str) -> None:
    extras = spec()["services"][service]["build"]["args"]["EXTRAS"]
    requirements = extras_closure(extras)
    assert not any(req.startswith("torch") for req in requirements), requirements
    assert any(req.startswith("numpy") for req in requirements)
    assert any(
        req.startswith("torch") for req in extras_closure(spec()["services"]["fleet"]["build"]["args"]["EXTRAS"])
    )


def test_the_dockerfile_copies_everything_pip_install_needs() -> None:
    # no engine here to build it: check instead that `pip install .[EXTRAS]` inside the image finds every package
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = set()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
                copied.add(source.rstrip("/"))
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in tool["packages"]:
        top = tool["package-dir"].get(package, package.replace(".", "/")).split("/")[0]
        assert top in copied, f"package {package} lives in {top}/, which the Dockerfile does not copy"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["readme"] in copied and "pyproject.toml" in copied
    assert re.search(r'pip install .*"\.\[\$\{EXTRAS\}\]"', dockerfile) and "USER iotfl" in dockerfile
