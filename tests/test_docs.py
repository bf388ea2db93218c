"""The documentation runs: every ```python block of each docs/ page executes (a page's blocks in
order, in one namespace, in a temporary folder with `examples/` there), and every `ecgscale ...`
command line written in docs/ or the README (shell blocks and inline code) names commands and
options that exist."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import typer

from ecgscale.cli.main import _register, app

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
STAGE_PAGES = (
    "data.md", "models.md", "objectives-train.md", "evaluate.md", "scaling.md",
    "study-report.md", "design.md",
)  # fmt: skip
PYTHON = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)
SHELL = re.compile(r"^```(?:bash|sh|console)\n(.*?)^```$", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
STOP = {"&&", "||", ";", "|", ">", ">>", "2>&1", "#"}


def _command_lines(text: str) -> list[str]:
    """Every `ecgscale ...` invocation: lines of shell blocks (continuations joined) and inline
    code spans outside fenced blocks."""
    found = []
    for block in SHELL.findall(text):
        found += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S)
    found += INLINE.findall(prose)
    lines = []
    for line in found:
        tokens = line.replace("\\|", "|").split()
        for i, token in enumerate(tokens):
            if token.strip("'\"").endswith(("ecgscale", "bin/ecgscale")) and "[" not in token:
                rest = []
                for word in tokens[i + 1 :]:
                    if word in STOP or word.startswith("#"):
                        break
                    rest.append(word)
                lines.append(" ".join(rest))
    return lines


def _check(words: str) -> str | None:
    """None when `ecgscale WORDS` names an existing command path and options; else the problem."""
    _register()
    command = typer.main.get_command(app)
    tokens = [t.strip("[](),.'\"") for t in words.split()]
    tokens = [t for t in tokens if t]
    path = ["ecgscale"]
    while tokens and hasattr(command, "commands") and not tokens[0].startswith("-"):
        choices = tokens[0].split("|")
        if not all(c in command.commands for c in choices):
            return f"{' '.join(path)}: no command {tokens[0]!r}"
        path.append(tokens.pop(0))
        command = command.commands[choices[0]]
    if hasattr(command, "commands") and len(path) > 1 and not tokens:
        return None  # a group named on its own (its commands are listed elsewhere)
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    for token in tokens:
        if re.fullmatch(r"--?[a-zA-Z][\w-]*(=.*)?", token) and token.split("=")[0] not in names:
            return f"{' '.join(path)}: no option {token.split('=')[0]}"
    return None


def test_every_pipeline_stage_has_a_page() -> None:
    assert {page.name for page in PAGES} >= set(STAGE_PAGES)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_commands_exist(page: Path) -> None:
    problems = [p for p in map(_check, _command_lines(page.read_text())) if p]
    assert not problems, problems


def test_readme_commands_exist() -> None:
    lines = _command_lines((ROOT / "README.md").read_text())
    assert len(lines) > 20
    problems = [p for p in map(_check, lines) if p]
    assert not problems, problems


def test_the_checker_catches_a_wrong_command_or_option() -> None:
    assert _check("models list 'resnet*' --sizes") is None
    assert _check("study run|resume STUDY.yaml") is None
    assert _check("models lst") == "ecgscale models: no command 'lst'"
    assert (
        _check("probe --checkpoint run --n-resamples 5")
        == "ecgscale probe: no option --n-resamples"
    )


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if PYTHON.search(p.read_text())],
    ids=[p.name for p in PAGES if PYTHON.search(p.read_text())],
)
def test_page_python_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs"}
    for k, code in enumerate(PYTHON.findall(page.read_text())):
        exec(compile(code, f"{page.name} block {k}", "exec"), namespace)
