"""The one build step pyproject.toml cannot declare: the data the service runs on goes into the wheel.

The dialects, the tariff versions, the payers' defaults and the demo roster stay at the checkout's top level (where
they are edited and documented); when a wheel is built they are copied into the package as settlement/shipped/<the
same relative path>, where settlement.paths finds them. MANIFEST.in puts the same paths into the sdist, so that a
wheel built from the sdist has them too. An editable install copies nothing: it reads the checkout's folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# Paths in the checkout, copied whole (a folder's new files need no change here).
SHIPPED = ("adapters", "tariffs", "deploy/payers.yaml", "examples/roster")
ROOT = Path(__file__).resolve().parent


class BuildPyWithShippedData(build_py):
    def run(self) -> None:
        if not self.editable_mode:
            # `pip install /path/to/checkout` builds in the checkout's build/, kept from the last time: a module or a
            # tariff removed since must not ride along into the new wheel.
            shutil.rmtree(Path(self.build_lib) / "settlement", ignore_errors=True)
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "settlement" / "shipped"
        for relative in SHIPPED:
            source, copy = ROOT / relative, target / relative
            if source.is_dir():
                shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.pyc"))
            else:
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy)


setup(cmdclass={"build_py": BuildPyWithShippedData})
