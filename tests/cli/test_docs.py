"""The docs and the package agree with the code: help texts, the command reference and the
README's exit-code table, links, the Dockerfile, the wheel, and the demo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import click
import pytest

from fileconsul import errors
from fileconsul.cli import cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "reference.md").read_text()
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(text: str, title: str) -> str:
    """The level-2 section whose heading starts with `title`."""
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def commands() -> list[tuple[str, click.Command]]:
    assert isinstance(cli, click.Group)
    return sorted(cli.commands.items())


@pytest.mark.parametrize(("name", "command"), commands())
def test_every_command_and_option_has_help_and_is_in_the_reference(
    name: str, command: click.Command
) -> None:
    reference = section(REFERENCE, f"`fileconsul {name}") + section(REFERENCE, "Every command")
    assert command.help, f"{name} has no help text"
    assert "Examples:" in command.help, f"{name} --help shows no example"
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        assert param.help, f"{name} {param.opts} has no help text"
        longest = max(param.opts, key=len)
        assert f"`{longest}" in reference, f"{longest} of {name} is not in the reference"


def exit_codes() -> set[int]:
    codes = {0, errors.EXIT_CHANGES, errors.EXIT_INTERNAL}
    pending: list[type[errors.FileconsulError]] = [errors.FileconsulError]
    while pending:
        kind = pending.pop()
        pending += kind.__subclasses__()
        if kind is not errors.FileconsulError:
            codes.add(kind.exit_code)
    return codes


def test_every_exit_code_is_in_the_table() -> None:
    table = section(README, "Exit codes")
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert documented == exit_codes()


def test_the_readme_is_short_enough_to_finish() -> None:
    assert len(README.splitlines()) <= 250


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_in_the_docs_resolves(doc: Path) -> None:
    for target, anchor in re.findall(r"\]\(([^)#]*)(?:#([^)]*))?\)", doc.read_text()):
        if "://" in target:
            continue
        linked = doc.parent / target if target else doc
        assert linked.exists(), f"{doc.name} links to missing {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{doc.name} links to missing {target}#{anchor}"


def _anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", doc.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_dockerfile_passes_hadolint_and_installs_this_version() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"ARG VERSION={version}\n" in (ROOT / "Dockerfile").read_text()


def test_the_image_carries_no_wheels_layer_and_its_script_is_named() -> None:
    """The final stage copies the installed files only (a wheels layer copied, then deleted,
    stays in the image); scripts/image builds it and runs a push and a pull in it."""
    final = (ROOT / "Dockerfile").read_text().rpartition("\nFROM ")[2]
    assert "/wheels" not in final
    assert "COPY --from=build /install /" in final
    assert "scripts/image" in README
    assert os.access(ROOT / "scripts" / "image", os.X_OK)


def test_the_wheel_builds_with_the_console_script(tmp_path: Path) -> None:
    # Built from a copy: a build in the checkout would leave build/ and *.egg-info behind.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "fileconsul", source / "fileconsul", ignore=_caches)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = tmp_path.glob("fileconsul-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "fileconsul = fileconsul.cli:main" in archive.read(entry_points).decode()
    assert "fileconsul/__main__.py" in names
    assert "fileconsul/py.typed" in names
    for name in ("index.html", "app.js", "app.css", "icon.svg"):
        assert f"fileconsul/cli/web/static/{name}" in names  # the page ships in the package


def _caches(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]


def test_the_demo_replays_the_article_and_checks_every_step() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "The demo ran as expected." in result.stdout
    assert "fileconsul status" in result.stdout


def test_every_test_the_guarantees_name_exists() -> None:
    """A promise names its test: the test must exist, so that the promise is checked."""
    text = (ROOT / "docs" / "guarantees.md").read_text()
    named = re.findall(r"`((?:\w+/)?test_\w+\.py)(?:::(test_\w+)(\*)?)?`", text)
    assert len(named) > 30
    for module, test, wildcard in named:
        source = (ROOT / "tests" / module).read_text()
        if test:
            pattern = rf"^def {test}\w*\(" if wildcard else rf"^def {test}\("
            assert re.search(pattern, source, re.M), f"{module}::{test} does not exist"
