"""Meta-tests of the documentation site (``docs/``, built by ``mkdocs build --strict``).

* Every public name (``__all__``) of the four packages appears somewhere in ``docs/``.
* Every hook of ``tokengate.core`` appears in the plugin guide, ``docs/plugins.md``.
* Every page under ``docs/`` is listed in ``mkdocs.yml``.
* Every fenced ``python`` block of ``docs/*.md`` and ``docs/concepts/*.md`` runs, each in a
  fresh interpreter with warnings as errors, unless the line before its fence is
  ``<!-- no-run -->``. A block whose first line starts with ``>>>`` runs as a doctest.
  Examples start and stop their own coordinator; a block that needs a worker process must
  guard its entry point with ``if __name__ == "__main__":`` (it runs as a script).

The site build itself is ``make docs`` (part of ``make test``), not a test here.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tokengate.core import _hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
PACKAGES = ("tokengate.core", "tokengate.hashing", "tokengate.conductor", "tokengate.numeric")
NO_RUN = "<!-- no-run -->"
#: Seconds one example may take before it counts as hung.
EXAMPLE_TIMEOUT = 60.0
#: Examples run this many at a time (each is a separate interpreter).
PARALLEL_EXAMPLES = max(1, min(4, os.cpu_count() or 1))

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
_RUNNABLE = {"python", "py", "pycon"}


@dataclass(frozen=True)
class Example:
    """One fenced code block of a docs page."""

    page: str  #: path relative to the repository root
    line: int  #: 1-based line of the opening fence
    code: str
    doctest: bool

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class Outcome:
    """What running an example gave."""

    returncode: int | None  #: None when it timed out
    output: str


def _pages() -> list[Path]:
    return (
        sorted(DOCS.glob("*.md"))
        + sorted((DOCS / "concepts").glob("*.md"))
        + sorted((DOCS / "recipes").glob("*.md"))
    )


def _all_docs_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(DOCS.rglob("*.md")))


def _examples_of(path: Path) -> list[Example]:
    return _parse(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def _parse(text: str, page: str) -> list[Example]:
    """The runnable fenced blocks of a page (``python``/``py``/``pycon``), no-run ones left
    out. Fences may be indented (lists, admonitions); their content is dedented."""
    lines = text.splitlines()
    examples: list[Example] = []
    previous = ""  # the last non-blank line outside a fence
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        indent, fence = match["indent"], match["fence"]
        words = match["info"].strip().split()
        language = words[0].lower().lstrip(".").strip("{}") if words else ""
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines):
            stripped = lines[index].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        index += 1  # past the closing fence
        if language in _RUNNABLE and previous != NO_RUN:
            code = "\n".join(body).strip("\n") + "\n"
            doctest = language == "pycon" or code.lstrip().startswith(">>>")
            examples.append(Example(page, start + 1, code, doctest))
        previous = ""
    return examples


def _all_examples() -> list[Example]:
    return [example for path in _pages() for example in _examples_of(path)]


def _run(example: Example, workdir: Path) -> Outcome:
    """Run one example in a fresh interpreter (its own process group, so a hung example and
    any worker process it started are killed together)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENGATE_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if example.doctest:
        script = workdir / "doc_example.txt"
        command = [sys.executable, "-W", "error", "-m", "doctest"]
        command += ["-o", "ELLIPSIS", "-o", "NORMALIZE_WHITESPACE", script.name]
    else:
        script = workdir / "doc_example.py"
        command = [sys.executable, "-W", "error", script.name]
    script.write_text(example.code, encoding="utf-8")
    with subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            output, _ = process.communicate(timeout=EXAMPLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            return Outcome(None, output)
    return Outcome(process.returncode, output)


@pytest.fixture(scope="session")
def example_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Outcome]]]:
    """Start every example selected in this session, a few at a time, in the background;
    each test then waits for its own."""
    selected: list[Example] = []
    for item in request.session.items:
        if isinstance(item, pytest.Function) and item.originalname == "test_example_runs":
            example = item.callspec.params.get("example")
            if isinstance(example, Example):
                selected.append(example)
    pool = ThreadPoolExecutor(max_workers=PARALLEL_EXAMPLES, thread_name_prefix="doc-example")
    try:
        runs = {
            example.name: pool.submit(_run, example, tmp_path_factory.mktemp("doc_example"))
            for example in selected
        }
        yield runs
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------- public names
def _public_names() -> list[tuple[str, str]]:
    names: list[tuple[str, str]] = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names += [(package, name) for name in module.__all__]
    return names


def test_every_package_has_public_names() -> None:
    counts = dict.fromkeys(PACKAGES, 0)
    for package, _ in _public_names():
        counts[package] += 1
    assert all(counts.values()), f"a package exports nothing: {counts}"


@pytest.mark.parametrize(("package", "name"), _public_names())
def test_public_name_is_documented(package: str, name: str) -> None:
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")
    assert pattern.search(_all_docs_text()), (
        f"{package}.{name} is public (in __all__) but no page under docs/ mentions it"
    )


# ---------------------------------------------------------------------- hooks
def _hook_names() -> list[str]:
    return sorted(
        name
        for name, value in vars(_hookspecs.HookSpecs).items()
        if name.startswith("tokengate_") and inspect.isfunction(value)
    )


def test_hookspecs_are_found() -> None:
    hooks = _hook_names()
    assert "tokengate_classify_weight" in hooks
    assert "tokengate_routing_policy" in hooks
    assert len(hooks) >= 8


@pytest.mark.parametrize("hook", _hook_names())
def test_hook_is_in_the_plugin_guide(hook: str) -> None:
    guide = DOCS / "plugins.md"
    assert guide.exists(), "docs/plugins.md (the plugin guide) does not exist"
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(hook)}(?![A-Za-z0-9_])")
    assert pattern.search(guide.read_text(encoding="utf-8")), (
        f"hook {hook} is not documented in docs/plugins.md"
    )


#: Pages whose examples must pass ``mypy --strict``: every plugin example, and an
#: implementation of each hook, is typed as a strict project would need it.
TYPED_PAGES = ("docs/plugins.md", "docs/testing.md")


def test_plugin_examples_pass_mypy_strict(tmp_path: Path) -> None:
    examples = [
        example
        for example in _all_examples()
        if example.page in TYPED_PAGES and not example.doctest
    ]
    assert {example.page for example in examples} == set(TYPED_PAGES)
    implemented = set()
    for example in examples:
        stem = re.sub(r"\W", "_", example.page.removeprefix("docs/").removesuffix(".md"))
        (tmp_path / f"{stem}_line{example.line}.py").write_text(example.code, encoding="utf-8")
        implemented |= set(re.findall(r"def (tokengate_\w+)\(", example.code))
    missing = set(_hook_names()) - implemented
    assert not missing, f"no type-checked example implements {sorted(missing)}"
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\nplugins = pydantic.mypy\n", encoding="utf-8")
    files = sorted(str(path) for path in tmp_path.glob("*.py"))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--no-incremental", *files],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, "mypy --strict rejects docs examples:\n" + done.stdout[-4000:]


# ---------------------------------------------------------------------- navigation
def test_every_page_is_in_the_nav() -> None:
    config = MKDOCS_YML.read_text(encoding="utf-8")
    listed = set(re.findall(r"[\w./-]+\.md\b", config))
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert pages - listed == set(), "pages missing from the nav of mkdocs.yml"


# ---------------------------------------------------------------------- examples
def test_the_fence_parser_finds_and_skips_blocks() -> None:
    text = (
        "Intro\n\n```python\nprint(1)\n```\n\n"
        "<!-- no-run -->\n```python\nraise SystemExit(1)\n```\n\n"
        "* item\n\n    ```py\n    x = 2\n    ```\n\n"
        "```text\nnot code\n```\n\n```python\n>>> 1 + 1\n2\n```\n"
    )
    found = _parse(text, "probe.md")
    assert [(e.line, e.code, e.doctest) for e in found] == [
        (3, "print(1)\n", False),
        (14, "x = 2\n", False),
        (22, ">>> 1 + 1\n2\n", True),
    ]


def test_docs_have_runnable_examples() -> None:
    pages = {example.page for example in _all_examples()}
    assert "docs/index.md" in pages, "the home page has no runnable example"
    assert "docs/tags.md" in pages


@pytest.mark.parametrize("example", _all_examples(), ids=lambda example: example.name)
def test_example_runs(example: Example, example_runs: dict[str, Future[Outcome]]) -> None:
    outcome = example_runs[example.name].result(timeout=EXAMPLE_TIMEOUT * 2)
    where = f"the example at {example.name}"
    assert outcome.returncode is not None, (
        f"{where} did not finish within {EXAMPLE_TIMEOUT:g} s:\n{outcome.output[-3000:]}"
    )
    assert outcome.returncode == 0, (
        f"{where} failed (exit {outcome.returncode}):\n{outcome.output[-3000:]}"
    )


def test_the_docs_and_the_code_stand_on_their_own() -> None:
    """Users have the repository, not the project's internal documents: nothing cites one."""
    cited = re.compile(r"\bSPEC\b\s*(§|section|layer|\.md)|\bSPEC\.md\b")
    texts = [*DOCS.rglob("*.md"), ROOT / "README.md", *ROOT.glob("packages/*/README.md")]
    texts += list(ROOT.glob("packages/*/src/tokengate/**/*.py"))
    offenders = [
        str(path.relative_to(ROOT))
        for path in texts
        if cited.search(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []
