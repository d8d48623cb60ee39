"""deploy/compose.yaml without a Docker engine: it is valid against the Compose Specification's JSON schema (the copy
check-jsonschema ships; `docker compose config` needs the compose plugin, which CI does not have), and every path
the service writes is a writable volume or tmpfs of a read-only container, never the image or a code mount; each
volume on the service's image is created in deploy/Dockerfile, owned by the service's user."""

from __future__ import annotations

import posixpath
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from settlement.config import Settings
from tests.factories import ROOT

DEPLOY = ROOT / "deploy"
CHECK_JSONSCHEMA = str(Path(sys.executable).parent / "check-jsonschema")
# The settings naming the paths the service writes (the keys are generated in the data folder when not set).
WRITABLE = {"SETTLEMENT_DATA_DIR": "data_dir", "SETTLEMENT_INBOX_DIR": "inbox_dir",
            "SETTLEMENT_REPORTS_DIR": "reports_dir"}

# The file before this check: the checkout mounted read-only and installed at every start, the reports and the
# inbox left at their defaults (var/..., relative to the working directory: inside the read-only code).
OLD_APP = yaml.safe_load("""
image: python:3.11-slim
working_dir: /opt/settlement
volumes: ["..:/opt/settlement:ro", "appdata:/var/lib/settlement"]
command: sh -c "python -m venv /venv && /venv/bin/pip install -q /opt/settlement && /venv/bin/settlement serve"
environment:
  SETTLEMENT_DATA_DIR: /var/lib/settlement
""")


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_compose_file_is_valid_against_the_compose_specification(tmp_path: Path) -> None:
    checked = validate(DEPLOY / "compose.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The schema catches what a typo makes: a misspelt service key, a volume that is no volume.
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    for planted in (text.replace("  read_only: true", "  read_onyl: true"),
                    text.replace("tmpfs: [/tmp]", "tmpfs: {size: 1}")):
        assert planted != text
        (tmp_path / "compose.yaml").write_text(planted, encoding="utf-8")
        refused = validate(tmp_path / "compose.yaml")
        assert refused.returncode == 1 and "compose.yaml::$.services" in refused.stdout, refused.stdout


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the list form: ["NAME=value", ...]
        return dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def mounts_of(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, writable) for each volume (short or long form) and tmpfs of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            mounts.append((source, target, "ro" not in (mode[0].split(",") if mode else [])))
        else:
            mounts.append((volume.get("source", ""), volume["target"], not volume.get("read_only", False)))
    tmpfs = service.get("tmpfs", [])
    mounts.extend(("tmpfs", target, True) for target in ([tmpfs] if isinstance(tmpfs, str) else tmpfs))
    return mounts


def created_in_image(dockerfile: str) -> set[str]:
    """The folders the Dockerfile makes with `install -d -o <user>` (a volume mounted there starts with its owner)."""
    joined = dockerfile.replace("\\\n", " ")
    found: set[str] = set()
    for command in re.findall(r"install -d -o \S+ -g \S+ -m \S+((?: +/[^\s&;]+)+)", joined):
        found.update(command.split())
    return found


def unwritable_paths(compose: dict[str, Any], dockerfile: str) -> list[str]:
    """What breaks the rule "every written path is a writable volume" for the services on the settlement image."""
    problems = []
    declared = set(compose.get("volumes") or {})
    in_image = created_in_image(dockerfile)
    for name, service in compose["services"].items():
        env = environment_of(service)
        if not any(key.startswith("SETTLEMENT_") for key in env):
            continue  # PostgreSQL and nginx: their own images
        mounts = mounts_of(service)
        if service.get("read_only") is not True:
            problems.append(f"{name}: not read_only, so a path without a volume would be written into the container")
        if not any(target == "/tmp" and writable for _, target, writable in mounts):
            problems.append(f"{name}: /tmp is not a tmpfs or volume")
        for source, target, _ in mounts:
            if source in ("..", "../", ".") or source.endswith("/.."):
                problems.append(f"{name}: the checkout is mounted at {target} (the image holds the installed wheel)")
            if source and not source.startswith((".", "/", "~")) and source != "tmpfs" and source not in declared:
                problems.append(f"{name}: volume {source} is not declared")
        workdir = service.get("working_dir", "/")
        for variable, field in WRITABLE.items():
            configured = env.get(variable, str(Settings.model_fields[field].default))
            path = posixpath.normpath(posixpath.join(workdir, configured))
            # The deepest mount holding the path decides whether it can be written.
            holding = [(target, writable) for _, target, writable in mounts
                       if path == target or path.startswith(target.rstrip("/") + "/")]
            target, writable = max(holding, default=("", False), key=lambda mount: len(mount[0]))
            if not writable:
                problems.append(f"{name}: {variable} {path} is not on a writable volume"
                                + (f" ({target} is read-only)" if target else ""))
        if "build" in service:
            for source, target, writable in mounts:
                if writable and source != "tmpfs" and target not in in_image:
                    problems.append(f"{name}: {target} is not made in the Dockerfile for the service's user")
    return problems


def shipped_compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return compose


def test_every_path_the_service_writes_is_a_writable_volume() -> None:
    compose = shipped_compose()
    assert {"app", "scheduler"} <= set(compose["services"])
    assert unwritable_paths(compose, (DEPLOY / "Dockerfile").read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("fault", ["the file before", "reports elsewhere", "data mounted read-only",
                                   "writable image", "volume not made in the image", "code mounted"])
def test_the_writable_path_check_catches(fault: str) -> None:
    compose = shipped_compose()
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    app = compose["services"]["app"]
    expected = {
        "the file before": "app: SETTLEMENT_REPORTS_DIR /opt/settlement/var/reports is not on a writable volume "
                           "(/opt/settlement is read-only)",
        "reports elsewhere": "app: SETTLEMENT_REPORTS_DIR /srv/reports is not on a writable volume",
        "data mounted read-only": "app: SETTLEMENT_DATA_DIR /var/lib/settlement is not on a writable volume "
                                  "(/var/lib/settlement is read-only)",
        "writable image": "app: not read_only",
        "volume not made in the image": "app: /var/lib/settlement/reports is not made in the Dockerfile",
        "code mounted": "app: the checkout is mounted at /opt/settlement",
    }[fault]
    if fault == "the file before":
        compose["services"]["app"] = OLD_APP
    elif fault == "reports elsewhere":
        app["environment"] = {**app["environment"], "SETTLEMENT_REPORTS_DIR": "/srv/reports"}
    elif fault == "data mounted read-only":
        app["volumes"] = [v + ":ro" if v.startswith("appdata:") else v for v in app["volumes"]]
    elif fault == "writable image":
        del app["read_only"]
    elif fault == "volume not made in the image":
        dockerfile = dockerfile.replace(" /var/lib/settlement/reports", "")
    else:
        app["volumes"] = [*app["volumes"], "..:/opt/settlement:ro"]
    problems = unwritable_paths(compose, dockerfile)
    assert any(problem.startswith(expected) for problem in problems), problems
