"""The distribution says its licence (Apache-2.0, like TEI) and ships the files that work offline."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_license_file_and_pyproject_agree_on_apache_2() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_offline_assets_are_package_data() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["embedserve"]
    for pattern, sample in (
        ("api/static/vendor/*", "api/static/vendor/swagger-ui-bundle.js"),
        ("engine/data/*", "engine/data/cl100k_base.tiktoken"),
    ):
        assert pattern in patterns and (REPO / "src" / "embedserve" / sample).is_file()
