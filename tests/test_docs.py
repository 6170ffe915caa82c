"""The README and docs/ against the code, so that what they tell a reader to type works.

- Every ``edgeseg ...`` command line (shell code blocks and inline code; ``\\`` continuations joined;
  ``python -m edgeseg`` and ``torchrun ... -m edgeseg`` too) is parsed by the CLI's own click parser,
  nothing run: an unknown command, an unknown option, an option without its value or an extra
  argument fails, naming the file and line. Values are converted by the option's type where they are
  not placeholders (a placeholder has a capital letter, ``$`` or ``...``: ``--workspace MiB``).
  Other programs' lines (python, bash, pip, rsync) are not edgeseg's and are left alone.
- Every relative link points at a file in the repository, and an anchor into a Markdown file at one
  of its headings (GitHub's slugs).
- The README stays two screens, lists every command, and docs/commands.md documents every option.

Each check is a function over a file, so the self-tests show it fails on a planted mistake.
"""

from __future__ import annotations

import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
import typer

from conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 210
SHELL_FENCES = ("", "bash", "sh", "shell", "console", "zsh")
SEPARATORS = ("&&", "||", "|", ";")
PREFIXES = ("sudo", "time", "exec", "nohup")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
PLACEHOLDER = re.compile(r"[A-Z$<]|\.\.\.|…")


@lru_cache(maxsize=None)
def _group():
    from edgeseg.cli import app

    return typer.main.get_command(app)


# --- reading Markdown ---------------------------------------------------------------------------------------------
def split_markdown(text: str) -> Tuple[List[Tuple[str, int, List[str]]], str]:
    """(fenced blocks as (language, first line number, lines), the text with every fenced line blanked)."""
    blocks, prose, block, fence = [], [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if block is None and match:
            fence, block = match.group(1), (match.group(2).lower(), number + 1, [])
            prose.append("")
        elif block is not None and match and line.strip() == fence[0] * len(line.strip()) and len(line.strip()) >= len(fence):
            blocks.append(block)
            block = None
            prose.append("")
        elif block is not None:
            block[2].append(line)
            prose.append("")
        else:
            prose.append(line)
    return blocks, "\n".join(prose)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def shell_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) of every shell line in fenced blocks, continuations joined, and of every inline code span."""
    blocks, prose = split_markdown(text)
    for language, first, lines in blocks:
        if language not in SHELL_FENCES:
            continue
        start, joined = None, ""
        for number, line in enumerate(lines, first):
            line = re.sub(r"^\s*\$ ", "", line) if start is None else line
            start = number if start is None else start
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            yield start, joined + line
            start, joined = None, ""
        if start is not None:
            yield start, joined
    for match in INLINE.finditer(prose):
        if "\n\n" not in match.group(1):
            yield _line_of(prose, match.start()), match.group(1).replace("\n", " ")


def edgeseg_argvs(line: str) -> Iterator[List[str]]:
    """The arguments after ``edgeseg`` of every edgeseg command in one shell line; ValueError if it cannot be split."""
    if not re.search(r"(^|[\s/;&|])edgeseg(\s|$)", line):
        return
    tokens = shlex.split(line, comments=True)
    segment: List[str] = []
    for token in [*tokens, ";"]:
        if token not in SEPARATORS and not token.endswith(";"):
            segment.append(token)
            continue
        if token.endswith(";") and token != ";":
            segment.append(token[:-1])
        argv = _after_edgeseg(segment)
        if argv is not None:
            yield [t.lstrip("[").rstrip("]") for t in argv if t not in ("...", "…")]
        segment = []


def _after_edgeseg(tokens: List[str]) -> Optional[List[str]]:
    for index, token in enumerate(tokens):
        if token == "-m" and tokens[index + 1 : index + 2] == ["edgeseg"]:  # python -m edgeseg, torchrun ... -m edgeseg
            return tokens[index + 2 :]
    words = list(tokens)
    while words and (words[0] in PREFIXES or re.match(r"^\w+=", words[0])):
        words.pop(0)
    if words and words[0].rsplit("/", 1)[-1] == "edgeseg":
        return words[1:]
    return None


# --- parsing against the CLI --------------------------------------------------------------------------------------
def argv_problem(argv: List[str]) -> Optional[str]:
    """Why ``edgeseg ARGV`` would not parse (unknown command or option, missing value, extra argument), or None.

    The parser ``make_context`` runs, without the rest of ``make_context``: that would also refuse a left-out
    required argument and convert every value, placeholders included (``--workspace MiB``); values are
    converted below, placeholders skipped."""
    usage_error = _usage_error()
    group = _group()
    try:
        _, rest, _ = group.make_parser(group.context_class(group, info_name="edgeseg")).parse_args(list(argv))
    except usage_error as err:
        return err.format_message()
    if not rest or rest[0].isupper():  # `edgeseg COMMAND --help`: a placeholder, not a command
        return None
    command = group.get_command(group.context_class(group, info_name="edgeseg"), rest[0])
    if command is None:
        return f"no such command: {rest[0]} (known: {', '.join(group.list_commands(None))})"
    context = command.context_class(command, info_name=rest[0])
    try:
        values, extra, _ = command.make_parser(context).parse_args(rest[1:])
    except usage_error as err:
        return f"{rest[0]}: {err.format_message()}"
    if extra:
        return f"{rest[0]}: unexpected extra argument(s) {' '.join(extra)}"
    return _value_problem(command, context, values)


def _value_problem(command, context, values: dict) -> Optional[str]:
    """A value that is not a placeholder and that the option's own type refuses (out of range, not a number)."""
    for param in command.params:
        if param.name not in values or getattr(param, "is_flag", False) or param.callback is not None:
            continue  # a flag has no value to convert; a callback (--version) acts instead of converting
        value = values[param.name]
        try:
            param.process_value(context, value)  # the type's conversion and range, as a real run does it
        except Exception as err:  # noqa: BLE001 - click's BadParameter, whatever click this is
            given = " ".join(value) if isinstance(value, (list, tuple)) else str(value)
            if not PLACEHOLDER.search(given):
                return f"{command.name}: {'/'.join(param.opts)} {given}: {err}"
    return None


def _usage_error() -> type:
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def command_problems(path: Path, root: Path = ROOT) -> Tuple[List[str], int]:
    """(problems as "FILE:LINE: `command`: why", how many edgeseg command lines were checked)."""
    problems, checked = [], 0
    name = path.relative_to(root)
    for number, line in sorted(shell_lines(path.read_text()), key=lambda item: item[0]):
        try:
            argvs = list(edgeseg_argvs(line))
        except ValueError as err:
            problems.append(f"{name}:{number}: `{line.strip()}`: cannot be split like a shell line ({err})")
            continue
        for argv in argvs:
            checked += 1
            why = argv_problem(argv)
            if why:
                problems.append(f"{name}:{number}: `edgeseg {' '.join(argv)}`: {why}")
    return problems, checked


# --- links --------------------------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, without punctuation, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset:
    _, prose = split_markdown(path.read_text())
    found, seen = set(HTML_ANCHOR.findall(prose)), {}
    for line in prose.splitlines():
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return frozenset(found)


def link_problems(path: Path, root: Path = ROOT) -> List[str]:
    """Relative links (and reference definitions) that point at no file in ``root``, or at no heading there."""
    _, prose = split_markdown(path.read_text())
    prose = INLINE.sub(lambda m: " " * len(m.group(0)), prose)  # a link inside inline code is text
    problems = []
    name = path.relative_to(root)
    for match in [*LINK.finditer(prose), *REFERENCE.finditer(prose)]:
        target = match.group(1)
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # https:, mailto:
            continue
        where = f"{name}:{_line_of(prose, match.start())}: ({target})"
        file_part, _, anchor = target.partition("#")
        file = (path.parent / file_part).resolve() if file_part else path
        if root.resolve() not in (file, *file.parents):
            problems.append(f"{where}: points outside the repository")
        elif not file.exists():
            problems.append(f"{where}: {file_part} does not exist")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{where}: {file.relative_to(root.resolve())} has no heading #{anchor}")
    return problems


# --- the README and docs/ -----------------------------------------------------------------------------------------
def test_there_are_docs_pages():
    assert README.is_file() and len(PAGES) >= 8, [p.name for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_edgeseg_command_line_parses(page):
    problems, _ = command_problems(page)
    assert problems == [], "\n".join(problems)


def test_the_docs_show_many_command_lines():
    counts = {str(page.relative_to(ROOT)): command_problems(page)[1] for page in PAGES}
    assert sum(counts.values()) >= 60 and counts["README.md"] >= 10 and counts["docs/commands.md"] >= 30, counts


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    problems = link_problems(page)
    assert problems == [], "\n".join(problems)


def test_the_readme_stays_two_screens():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {README_MAX_LINES})"


def sections(path: Path) -> dict:
    """Heading text -> the text under it, down to the next heading of the same or a higher level."""
    lines = split_markdown(path.read_text())[1].splitlines()
    marks = [(i, len(m.group(1)), m.group(2)) for i, m in ((i, HEADING.match(line)) for i, line in enumerate(lines)) if m]
    found = {}
    for index, (start, level, title) in enumerate(marks):
        end = next((i for i, lv, _ in marks[index + 1 :] if lv <= level), len(lines))
        found[title] = "\n".join(lines[start + 1 : end])
    return found


def test_the_readme_names_every_command_and_docs_commands_every_option():
    group = _group()
    readme, commands = README.read_text(), sections(ROOT / "docs" / "commands.md")
    for name in group.list_commands(None):
        assert f"`edgeseg {name}`" in readme, f"README.md: the command table misses {name}"
        assert f"`edgeseg {name}`" in commands, f"docs/commands.md: no heading `edgeseg {name}`"
        section = commands[f"`edgeseg {name}`"]
        for param in group.get_command(None, name).params:
            for option in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                if option.startswith("--") and option != "--help":
                    assert option in section, f"docs/commands.md: edgeseg {name}'s section does not mention {option}"


# --- each check catches a planted mistake -------------------------------------------------------------------------
PLANTED = """# Planted

Fine: `edgeseg verify out/export/model.int8.engine`, `edgeseg COMMAND --help`, `edgeseg verify MODEL [--bundle DIR]`,
`pip install 'edgeseg[trt]'`, `python -m pytest --presicion`, `edgeseg.runtime.Segmenter.load(path)`.

```bash
edgeseg export models/reference/best.pt --out out/export --data camvid:../x --split heldout \\
    --precision fp32,fp16,int8 --calib calib_data/x --workspace MiB   # placeholders pass
edgeseg run ... --out http://:8080 --out drive.mp4 --no-show
cd edgeseg && .venv/bin/edgeseg bench a.onnx b.onnx --threads 2 | tee bench.txt
torchrun --nproc_per_node 4 -m edgeseg train --data camvid:x --out runs/ddp --amp
bash scripts/setup.sh --dev
```

```bash
edgeseg export models/reference/best.pt --out out/x \\
    --presicion int8
```

Then `edgeseg exprot m.pt`, `edgeseg verify a.onnx b.onnx`, `edgeseg export m.pt --opset 99`, `edgeseg build --out`.
"""


def test_a_misspelt_option_an_unknown_command_a_bad_value_and_an_extra_argument_fail(tmp_path):
    page = tmp_path / "README.md"
    page.write_text(PLANTED)
    problems, checked = command_problems(page, tmp_path)
    assert checked == 12
    assert len(problems) == 5, "\n".join(problems)
    misspelt, command, extra, value, missing = problems
    assert misspelt.startswith("README.md:16: `edgeseg export models/reference/best.pt --out out/x --presicion int8`")
    assert "No such option: --presicion" in misspelt and "--precision" in misspelt
    assert command.startswith("README.md:20: `edgeseg exprot m.pt`: no such command: exprot")
    assert "unexpected extra argument(s) b.onnx" in extra
    assert value.startswith("README.md:20:") and "--opset 99" in value
    assert "--out" in missing and "requires an argument" in missing


def test_the_real_docs_check_reports_a_misspelt_option_as_a_user_would_see_it(tmp_path):
    page = tmp_path / "commands.md"
    text = (ROOT / "docs" / "commands.md").read_text()
    assert "edgeseg calib-data --data" in text
    page.write_text(text.replace("edgeseg calib-data --data", "edgeseg calib-data --dta", 1))
    problems, _ = command_problems(page, tmp_path)
    line = text.splitlines().index(next(l for l in text.splitlines() if "edgeseg calib-data --data" in l)) + 1
    assert len(problems) == 1 and problems[0].startswith(f"commands.md:{line}: `edgeseg calib-data --dta"), problems
    assert "No such option: --dta" in problems[0], problems


def test_a_broken_link_and_a_missing_heading_fail(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# There\n\n## The bundle, `export.json` — files\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/there.md) [ok](docs/there.md#the-bundle-exportjson--files) [ok](docs/there.md#twice-1)\n"
        "[ok](https://example.com/x) [ok](#planted) `[code](nowhere.md)`\n\n# Planted\n\n"
        "[gone](docs/gone.md) [anchor](docs/there.md#nowhere)\n[out](../outside.md)\n[ref]: docs/missing.md\n"
    )  # fmt: skip
    problems = link_problems(page, tmp_path)
    assert problems == [
        "README.md:6: (docs/gone.md): docs/gone.md does not exist",
        "README.md:6: (docs/there.md#nowhere): docs/there.md has no heading #nowhere",
        "README.md:7: (../outside.md): points outside the repository",
        "README.md:8: (docs/missing.md): docs/missing.md does not exist",
    ], problems
