"""The front door stays honest: README.md is short, its links and the manual's lead somewhere,
and every `fractaldb` command in README.md and docs/ names real subcommands and options."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import subprocess
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block of a markdown text."""
    found, lang, body = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                found.append((lang, "\n".join(body) + "\n"))
                lang = None
        elif lang is not None:
            body.append(line)
    return found


def prose(text: str) -> str:
    """A markdown text without its fenced code blocks."""
    kept, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a markdown page's headings (outside code blocks)."""
    text = prose(page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def commands(page: Path) -> list[list[str]]:
    """The `fractaldb ...` command lines in a page's shell blocks (continuations joined)."""
    found = []
    for lang, body in blocks(page.read_text()):
        if lang not in ("bash", "sh", ""):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if "fractaldb " not in line or line.startswith("#"):
                continue
            words = shlex.split(line[line.index("fractaldb ") :])
            if words[0] == "fractaldb":
                found.append(words[1:])
    return found


def option_problems(words: list[str]) -> list[str]:
    """What is wrong with one command line: unknown subcommands or options."""
    from fractaldb.cli import main

    cmd: click.Command = main
    ctx = click.Context(main)
    rest = list(words)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            return [f"no subcommand {rest[0]!r} in {' '.join(words)}"]
        cmd, rest = sub, rest[1:]
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
    return [
        f"{cmd.name}: no option {w.split('=')[0]!r} in {' '.join(words)}"
        for w in rest
        if w.startswith("-") and w != "..." and w.split("=")[0] not in known
    ]


def tracked_folders() -> set[str]:
    """Top-level folders git tracks (the listing of the checkout where git is missing)."""
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        return {line.split("/")[0] for line in out.splitlines() if "/" in line}
    except (OSError, subprocess.CalledProcessError):
        ignored = {"data", "runs", ".git", ".venv", ".pytest_cache", ".ruff_cache"}
        return {p.name for p in REPO.iterdir() if p.is_dir() and p.name not in ignored}


def test_readme_is_a_short_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert 100 <= len(lines) <= 200, len(lines)
    text = "\n".join(lines)
    for topic in ("rendering", "shards", "gpu", "training", "transfer-and-inspection", "errors"):
        assert f"docs/{topic}.md" in text, topic
    assert "docs/results.md" in text
    # the layout names every top-level folder of the checkout
    layout = text[text.index("## Layout") :]
    for name in tracked_folders():
        assert f"`{name}/" in layout, name


def test_every_relative_link_leads_to_a_file_and_heading():
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.name}: {target}"
            if anchor:
                assert anchor in anchors(dest), f"{page.name}: {target}"


def test_every_fractaldb_command_shown_has_real_subcommands_and_options():
    lines = [words for page in PAGES for words in commands(page)]
    assert len(lines) > 20  # the pages were read
    # and the README's inline ones (the pipeline table)
    inline = re.findall(r"`fractaldb ([^`]+)`", prose((REPO / "README.md").read_text()))
    assert len(inline) > 5
    lines += [shlex.split(line) for line in inline]
    problems = [p for words in lines for p in option_problems(words)]
    assert problems == []


def test_readme_python_imports_exist():
    readme = (REPO / "README.md").read_text()
    python = [body for lang, body in blocks(readme) if lang == "python"]
    assert python
    for body in python:
        for node in ast.walk(ast.parse(body)):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
