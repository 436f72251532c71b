"""Every code block of README.md runs as written.

Each ``python`` block is exec'd as written, in a fresh namespace of a fresh interpreter
(a subprocess with a timeout); it must emit no warning, and when a ``text`` block follows it
(only a short "prints ..." line between), its output must match that block (doctest
rules: ``...`` matches anything, whitespace runs compare equal). ``bash``
blocks: the ``jdeconv ...`` and ``python -m jdeconv ...`` lines run in order in one
temporary directory holding a copy of ``configs/`` (so the README's relative paths
resolve); installation lines (``pip install``) and the test command (``python -m pytest``)
are skipped. Every command must exit with status 0.

All these processes share one fresh persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``,
for this module only), as a user's processes share theirs: the command-line example estimates
on the Python example's sizes, so it loads that program instead of compiling it again.
"""

import doctest
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TIMEOUT_S = 240

_FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)


def blocks(language):
    """The bodies of the README's fenced blocks in ``language``, in order."""
    return [body for lang, body in _FENCE.findall(README.read_text(encoding="utf-8"))
            if lang.lower() == language]


def commands():
    """The ``jdeconv`` / ``python -m jdeconv`` lines of the bash blocks, comments stripped."""
    out = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] == "jdeconv":
                out.append([sys.executable, "-m", "jdeconv"] + words[1:])
            elif words[:3] in (["python", "-m", "jdeconv"], ["python3", "-m", "jdeconv"]):
                out.append([sys.executable, "-m", "jdeconv"] + words[3:])
            # anything else (pip install, python -m pytest, ...) is not run here
    return out


def _env(tmp_path, cache):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "JDECONV_"))}
    env.update(JAX_PLATFORMS="cpu", MPLBACKEND="Agg", XDG_CACHE_HOME=str(tmp_path / "cache"),
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
               # the CLI's own thresholds, for the Python blocks too
               JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.1",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    return env


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One compilation cache for this module's processes (empty at the start of the session)."""
    return tmp_path_factory.mktemp("readme-jax-cache")


def test_readme_has_code_blocks():
    assert blocks("python"), "README.md has no ```python block"
    assert commands(), "README.md has no jdeconv command in a ```bash block"


_RUNNER = """
import sys
path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    code = f.read()
exec(compile(code, path, "exec"), {"__name__": "__main__"})
"""

def python_blocks():
    """``(code, expected output or None)`` of the README's python blocks, in order."""
    text = README.read_text(encoding="utf-8")
    found = list(_FENCE.finditer(text))
    out = []
    for i, m in enumerate(found):
        if m.group(1).lower() != "python":
            continue
        expected = None
        if i + 1 < len(found) and found[i + 1].group(1).lower() == "text":
            between = text[m.end():found[i + 1].start()].strip()
            if between.startswith("prints") and "\n\n" not in between:
                expected = found[i + 1].group(2)
        out.append((m.group(2), expected))
    return out


def output_matches(expected: str, got: str) -> bool:
    """doctest's comparison: ``...`` matches anything, runs of whitespace compare equal."""
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    return doctest.OutputChecker().check_output(expected, got, flags)


PYTHON_BLOCKS = python_blocks()
_WARNING = re.compile(r"^\S.*\b\w*Warning: ", re.M)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)),
                         ids=[f"block{i + 1}" for i in range(len(PYTHON_BLOCKS))])
def test_python_block_runs_as_written(tmp_path, cache, index, released_memory):
    path = tmp_path / f"README.md python block {index + 1}"
    code, expected = PYTHON_BLOCKS[index]
    path.write_text(code, encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", _RUNNER, str(path)], cwd=tmp_path,
                         env=_env(tmp_path, cache), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert out.returncode == 0, f"README python block {index + 1} failed:\n{out.stderr[-4000:]}"
    assert not _WARNING.search(out.stderr), \
        f"README python block {index + 1} warned:\n{out.stderr[-4000:]}"
    if expected is not None:
        assert output_matches(expected, out.stdout), \
            f"README python block {index + 1} printed\n{out.stdout}\ninstead of\n{expected}"


def test_bash_commands_run(tmp_path, cache, released_memory):
    work = tmp_path / "work"
    work.mkdir()
    if (ROOT / "configs").is_dir():
        shutil.copytree(ROOT / "configs", work / "configs")
    env = _env(tmp_path, cache)
    for cmd in commands():
        out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                             timeout=TIMEOUT_S)
        shown = " ".join(["jdeconv"] + cmd[3:])
        assert out.returncode == 0, f"`{shown}` exited with {out.returncode}:\n{out.stderr[-3000:]}"


def test_expected_output_blocks(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("```python\nprint(1)\n```\n\nprints\n\n```text\n1\n```\n"
                      "```python\nprint(2)\n```\nSome prose.\n\nMore.\n```text\nx\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "README", readme)
    assert python_blocks() == [("print(1)\n", "1\n"), ("print(2)\n", None)]
    assert output_matches("a=... b=2\n", "a=0.125  b=2\n")
    assert not output_matches("a=... b=2\n", "a=0.125 b=3\n")
    assert all(expected is not None for _, expected in PYTHON_BLOCKS), \
        "every README python block shows what it prints"


@pytest.mark.parametrize("text, expected", [
    ("```bash\njdeconv run a.yaml --out x   # comment\npip install -e .\npython -m pytest\n```\n",
     [["run", "a.yaml", "--out", "x"]]),
    ("```bash\npython -m jdeconv --help\n```\n```python\nprint(1)\n```\n", [["--help"]]),
])
def test_command_extraction(tmp_path, monkeypatch, text, expected):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "README", readme)
    assert [c[3:] for c in commands()] == expected
