"""README's commands are true: every ``embedserve`` subcommand and flag its quick start uses exists in the real CLI
parser, its test command is the one ``.ci/run`` runs, and it stays a front door (at most 250 lines).

docs/index.md (the site's getting-started page) is held to the same check.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from embedserve.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
GETTING_STARTED = ROOT / "docs" / "index.md"
_FENCE = re.compile(r"^```(?:bash|sh|console)\n(.*?)^```", re.M | re.S)
_OPERATORS = {"&&", "||", ";", "|", "&"}
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def section(markdown: str, heading: str) -> str:
    """The text under ``## heading`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def shell_commands(markdown: str) -> list[list[str]]:
    """Every simple command in the markdown's bash blocks, as argv lists (``a && b; c | d`` gives four)."""
    commands: list[list[str]] = []
    for block in _FENCE.findall(markdown):
        current: list[str] = []
        for token in _tokens(block):
            if token in _OPERATORS or token == "\n":
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands


def _tokens(block: str) -> list[str]:
    tokens: list[str] = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens.extend(lexer)
        tokens.append("\n")
    return tokens


def embedserve_argvs(markdown: str) -> list[list[str]]:
    """The arguments of each ``embedserve ...`` command (environment assignments before it skipped)."""
    argvs = []
    for command in shell_commands(markdown):
        words = list(command)
        while words and _ENV_ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words and words[0] == "embedserve":
            argvs.append(words[1:])
    return argvs


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def problems(argv: list[str]) -> list[str]:
    """What is wrong with ``embedserve <argv>`` for the real parser: unknown subcommands and flags, bad values.

    Flags must be spelled out in full: argparse would accept an abbreviation, but a README that writes one is
    using a flag that does not exist.
    """
    parser = _parser()
    found: list[str] = []
    rest = list(argv)
    while (choices := _subcommands(parser)) and rest and not rest[0].startswith("-"):
        if rest[0] not in choices:
            return [f"unknown subcommand {rest[0]!r} (choices: {', '.join(choices)})"]
        parser = choices[rest.pop(0)]
    if choices := _subcommands(parser):
        found.append(f"a subcommand is missing (choices: {', '.join(choices)})")
    known = {option for action in parser._actions for option in action.option_strings}
    for word in rest:
        flag = word.split("=", 1)[0]
        if flag.startswith("-") and flag not in known:
            found.append(f"unknown flag {flag}")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.suppress(SystemExit):
        _parser().parse_args(argv)
    if stderr.getvalue():
        found.append(stderr.getvalue().strip().splitlines()[-1])
    return found


def _quick_start() -> str:
    return section(README.read_text(encoding="utf-8"), "Quick start")


def test_readme_quick_start_uses_embedserve_commands() -> None:
    argvs = embedserve_argvs(_quick_start())
    assert any(argv[:1] == ["serve"] for argv in argvs), argvs  # the install-and-serve command is there


@pytest.mark.parametrize("source", ["README quick start", "docs/index.md"])
def test_every_embedserve_command_and_flag_in_the_docs_exists(source: str) -> None:
    text = _quick_start() if source == "README quick start" else GETTING_STARTED.read_text(encoding="utf-8")
    argvs = embedserve_argvs(text)
    assert argvs, f"no embedserve command found in {source}"
    wrong = {shlex.join(["embedserve", *argv]): found for argv in argvs if (found := problems(argv))}
    assert not wrong, f"{source} uses what the CLI does not have: {wrong}"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("embedserve serve --no-such-flag", "unknown flag --no-such-flag"),
        ("embedserve serve --served-model BAAI/x", "unknown flag --served-model"),  # an abbreviation
        ("embedserve keys make --name a", "unknown subcommand 'make'"),
        ("embedserve serve --dtype int4", "invalid choice: 'int4'"),
        ("X=1 embedserve keys create --name a --credit 5", "unknown flag --credit"),
        ("embedserve keys", "a subcommand is missing"),
    ],
)
def test_the_check_catches_a_wrong_command(command: str, expected: str) -> None:
    (argv,) = embedserve_argvs(f"```bash\n{command}\n```\n")
    assert any(expected in p for p in problems(argv)), problems(argv)


def test_the_check_passes_a_right_command() -> None:
    markdown = "```bash\npip install -e . && EMBEDSERVE_X=1 embedserve serve --model m --port=9000 \\\n --no-auth\n```"
    assert embedserve_argvs(markdown) == [["serve", "--model", "m", "--port=9000", "--no-auth"]]
    assert problems(["serve", "--model", "m", "--port=9000", "--no-auth"]) == []


def _pytest_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("python -m pytest")]


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = _pytest_lines(_quick_start())
    ci = _pytest_lines(CI_RUN.read_text(encoding="utf-8"))
    assert len(readme) == 1, readme
    assert ci == readme, f".ci/run runs {ci}, README says {readme}"


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move detail into docs/"
