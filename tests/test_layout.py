"""The package layout never shadows the standard library."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_repository_root_on_sys_path_keeps_stdlib_operator() -> None:
    # `python -m anything` from the repository root puts the root first on sys.path.
    code = "import operator, kopf; print(operator.__file__); from operator import eq"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert str(REPO) not in result.stdout


def test_operator_package_imports_under_optimodel() -> None:
    from optimodel.operator import api

    assert api.KIND == "OptimizedModel"
