"""The install deploy/README.md describes, for real: the wheel is built from a copy of the checkout (sdist first, then
the wheel from the sdist, as `python -m build` does), installed into a fresh virtual environment outside the
checkout, and run from another directory with no setting pointing back at the checkout. The service must find its
dialects, tariffs, payers and demo roster inside the package: /soap?wsdl answers, zeep calls Eligibility with a
password digest, `settlement soap dialects` lists the three dialects and the payer simulator serves its WSDL.

Slow (a build and a virtual environment, about a minute): marked `install`, it runs once in `make test`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import zeep
from zeep.helpers import serialize_object
from zeep.wsse.username import UsernameToken

from tests.factories import ROOT
from tests.service.conftest import free_port

pytestmark = pytest.mark.install

# What the installed service runs on, by its path in the checkout: every file in these must be in the wheel, under
# settlement/shipped/ (new tariff versions and dialect folders included, without anyone listing them).
SHIPPED = ("adapters", "tariffs", "deploy/payers.yaml", "examples/roster")
NOT_SOURCES = shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "var", "htmlcov",
                                     "tests", "benchmarks")
PERSON = "611002196804120038"  # 王喆 of the demo roster, dibao_rural_a in 611002


def files_under(root: Path, relative: str) -> list[str]:
    path = root / relative
    if path.is_file():
        return [relative]
    return sorted(str(file.relative_to(root)) for file in path.rglob("*")
                  if file.is_file() and "__pycache__" not in file.parts and not file.name.startswith("."))


def missing_from_wheel(names: set[str], checkout: Path) -> list[str]:
    """Files the installed service needs that a wheel (its member names) lacks: the shipped data, and the
    package's own files that are not modules (WSDL, migration template, py.typed...)."""
    wanted = [f"settlement/shipped/{file}" for relative in SHIPPED for file in files_under(checkout, relative)]
    package = checkout / "src" / "settlement"
    wanted += [f"settlement/{file.relative_to(package)}" for file in sorted(package.rglob("*"))
               if file.is_file() and file.suffix not in (".py", ".pyc") and "__pycache__" not in file.parts]
    return [name for name in wanted if name not in names]


@dataclass
class Installed:
    wheel: Path
    venv: Path
    elsewhere: Path  # an empty working directory, far from any checkout
    env: dict[str, str]

    @property
    def settlement(self) -> str:
        return str(self.venv / "bin" / "settlement")

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.settlement, *args], cwd=self.elsewhere, env=env or self.env, capture_output=True,
                              text=True, timeout=120, check=False)


def clean_environment(data: Path) -> dict[str, str]:
    """This process's environment without any setting of the service or of Python's module search (nothing may
    point back at the checkout), and a data folder and SQLite database of the test's own."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("SETTLEMENT_", "PYTHON", "VIRTUAL_ENV"))}
    env["SETTLEMENT_DATA_DIR"] = str(data)
    env["SETTLEMENT_DATABASE_URL"] = f"sqlite:///{data / 'settlement.sqlite3'}"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("install")
    checkout = work / "checkout"
    shutil.copytree(ROOT, checkout, ignore=NOT_SOURCES)
    dist = work / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(checkout)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    shutil.rmtree(checkout)  # what follows has only the wheel
    (wheel,) = dist.glob("settlement-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    # This environment's pip installs into the new one (--python): no pip inside it to bootstrap first.
    installing = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                                 "--quiet", "--no-compile", str(wheel)], capture_output=True, text=True, timeout=300,
                                check=False)
    assert installing.returncode == 0, installing.stdout[-3000:] + installing.stderr[-3000:]
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return Installed(wheel, venv, elsewhere, clean_environment(work / "data"))


def test_the_wheel_holds_what_the_service_runs_on(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    assert missing_from_wheel(names, ROOT) == []
    assert "settlement/insurers/statement.wsdl" in names
    # The check itself: a wheel short of one tariff version, or of the payers' WSDL, is caught.
    for planted in ("settlement/shipped/tariffs/611000/2024-01-01.yaml", "settlement/insurers/statement.wsdl"):
        assert missing_from_wheel(names - {planted}, ROOT) == [planted]


def test_a_wheel_built_in_the_checkout_leaves_out_what_build_kept_from_before(tmp_path: Path) -> None:
    """`pip install /path/to/checkout` builds in the checkout, where build/ keeps the files of the last build."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=NOT_SOURCES)
    stale = ("settlement/retired_module.py", "settlement/shipped/tariffs/611000/2020-01-01.yaml")
    for name in stale:
        (checkout / "build" / "lib" / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / "build" / "lib" / name).write_text("left over\n", encoding="utf-8")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                            str(tmp_path / "dist"), str(checkout)], capture_output=True, text=True, timeout=300,
                           check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("settlement-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert missing_from_wheel(names, ROOT) == []
    assert not names & set(stale)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    script = ("import settlement.paths as p; print(p.__file__); print(*(path for path in (p.default_adapters_dir(), "
              "p.default_tariffs_dir(), p.default_payers_file(), p.demo_roster_file()) if path.exists()))")
    where = subprocess.run([str(installed.venv / "bin" / "python"), "-c", script], cwd=installed.elsewhere,
                           env=installed.env, capture_output=True, text=True, timeout=60, check=True).stdout.split()
    site = str(installed.venv / "lib")
    assert len(where) == 5 and all(path.startswith(site) for path in where), where


def test_soap_dialects_lists_the_three_shipped_dialects(installed: Installed) -> None:
    listed = installed.run("soap", "dialects")
    assert listed.returncode == 0, listed.stderr
    for dialect in ("standard", "legacy-gbk", "rural-ncms"):
        assert dialect in listed.stdout
    # A folder without any dialect is refused, not listed as an empty table.
    empty = installed.elsewhere / "no-dialects"
    empty.mkdir(exist_ok=True)
    refused = installed.run("soap", "dialects", env={**installed.env, "SETTLEMENT_ADAPTERS_DIR": str(empty)})
    assert refused.returncode == 3 and "no dialect" in refused.stderr, refused


@contextmanager
def running(installed: Installed, log: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`settlement ARGS --port P` of the installed package, from the other directory, until the block ends;
    (process, base URL) once it answers HTTP."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen([installed.settlement, *args, "--port", str(port)], cwd=installed.elsewhere,
                                   env=installed.env, stdout=output, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "no answer in 60 s\n" + log.read_text(encoding="utf-8")
                try:
                    httpx.get(url, timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            yield process, url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:  # pragma: no cover - only when shutdown hangs
                process.kill()
                process.wait()


def plain(value: Any) -> dict[str, Any]:
    result: dict[str, Any] = serialize_object(value, dict)  # type: ignore[no-untyped-call]
    return result


def test_the_installed_service_answers_soap_and_rest_from_elsewhere(installed: Installed, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with running(installed, log, "serve", "--demo") as (_, url):
        started = log.read_text(encoding="utf-8")
        seeded = "610900 2024-01-01, 611000 2024-01-01, 611000 2025-01-01, 611021 2024-01-01"
        assert f"tariff versions recorded as in force: {seeded}" in started, started
        assert "demo roster:" in started
        keys = {line.split()[0]: line.split() for line in
                (Path(installed.env["SETTLEMENT_DATA_DIR"]) / "demo-keys.txt").read_text("utf-8").splitlines()}
        wsdl = httpx.get(f"{url}/soap?wsdl", timeout=10)
        assert wsdl.status_code == 200 and b"definitions" in wsdl.content, wsdl.text[:500]
        _, code, password = keys["soap"]
        token = UsernameToken(code, password, use_digest=True)  # type: ignore[no-untyped-call]
        client = zeep.Client(f"{url}/soap?wsdl", wsse=token)  # type: ignore[no-untyped-call]
        eligible = plain(client.service.Eligibility(idNumber=PERSON, on=date(2024, 6, 15)))
        assert eligible["inRoster"] is True
        assert [category["code"] for category in eligible["categories"]["category"]] == ["dibao_rural_a"]
        # The README's example bill over REST: the shipped tariffs, read from the package, give its figures.
        request = json.loads((ROOT / "examples" / "requests" / "settle-dibao-county.json").read_text("utf-8"))
        settled = httpx.post(f"{url}/v1/settlements", json=request, timeout=30,
                             headers={"Authorization": f"Bearer {keys['hospital'][-1]}"})
        assert settled.status_code == 201, settled.text
        assert settled.json()["patient_pays"] == "2949.74"


def test_the_installed_payer_simulator_serves_its_wsdl(installed: Installed, tmp_path: Path) -> None:
    with running(installed, tmp_path / "payer-sim.log", "payer-sim") as (_, url):
        wsdl = httpx.get(f"{url}/statements?wsdl", timeout=10)
        assert wsdl.status_code == 200, wsdl.text[:500]
        client = zeep.Client(f"{url}/statements?wsdl")  # type: ignore[no-untyped-call]
        statement = plain(client.service.GetStatement(requestId="WHEEL-1", payer="basic",
                                                      businessDate=date(2024, 6, 15)))
        assert (statement["requestId"], statement["payer"]) == ("WHEEL-1", "basic")
