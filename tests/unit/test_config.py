"""[tool.leakscope]: found from the cwd upward, checked key by key, below the command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from leakscope.model import config
from leakscope.model.config import CheckSettings
from leakscope.model.errors import ConfigError


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pyproject.toml"
    path.write_text(text)
    return path


def test_found_from_a_subdirectory(tmp_path, monkeypatch):
    write(tmp_path, '[tool.leakscope]\niterations = 30\ntargets = ["workers/w.py"]\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    cfg = config.load()
    assert cfg.path == tmp_path / "pyproject.toml"
    assert cfg.settings.iterations == 30
    # A file target is relative to the pyproject.toml, shown relative to the cwd.
    assert cfg.targets[0].target == os.path.join("..", "..", "workers", "w.py")


def test_a_pyproject_without_the_table_is_passed_over(tmp_path):
    write(tmp_path, '[tool.leakscope]\nmax-growth = "1KiB"\n')
    inner = write(tmp_path / "pkg", '[project]\nname = "pkg"\n')
    cfg = config.load(inner.parent)
    assert cfg.path == tmp_path / "pyproject.toml"
    assert cfg.settings.max_growth == 1024


def test_no_config_anywhere(tmp_path):
    cfg = config.load(tmp_path)
    assert cfg.path is None
    assert cfg.targets == [] and cfg.settings == CheckSettings()


def test_every_key_and_target_tables(tmp_path):
    path = write(tmp_path, """
[tool.leakscope]
max-growth = "512B"
iterations = 40
warmup = "auto"
frames = 5
timeout = 30
memory-limit = "1GiB"
holders = false
targets = [
  "app.worker:handle",
  { target = "w.py:loop", args = ["--queue", "q"], max_growth = 2048, iterations = 80 },
]
""")
    cfg = config.load(tmp_path)
    assert cfg.path == path
    assert cfg.settings == CheckSettings(
        max_growth=512, iterations=40, warmup="auto", frames=5, timeout=30.0,
        memory_limit=1024**3, holders=False,
    )
    module, script = cfg.targets
    assert module.target == "app.worker:handle"  # a module target is left as written
    assert script.args == ["--queue", "q"]
    assert script.settings.max_growth == 2048  # max_growth is read as max-growth
    assert script.settings.iterations == 80


def test_command_line_over_target_over_table():
    table = CheckSettings(max_growth=0, iterations=40, warmup=5)
    target = CheckSettings(iterations=80, holders=False)
    cli = CheckSettings(max_growth=4096)
    merged = cli.over(target).over(table)
    assert merged == CheckSettings(max_growth=4096, iterations=80, warmup=5, holders=False)


def test_entry_for_a_target_named_on_the_command_line(tmp_path):
    write(tmp_path, '[tool.leakscope]\ntargets = [{ target = "app.w:f", iterations = 9 }]\n')
    cfg = config.load(tmp_path)
    entry = cfg.entry_for("app.w:f")
    assert entry is not None and entry.settings.iterations == 9
    assert cfg.entry_for("other:f") is None


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ('iterations = "many"', ['iterations = "many"', "whole number"]),
        ("iterations = 0", ["iterations = 0", "1 or more"]),
        ("iterations = true", ["iterations = true"]),
        ('max-growth = "4XB"', ['max-growth = "4XB"', "not a size"]),
        ("max_growth = [1]", ["max_growth = [1]", "not a size"]),
        ('warmup = "soon"', ['warmup = "soon"', "auto"]),
        ("timeout = -1", ["timeout = -1", "seconds"]),
        ('memory-limit = "big"', ['memory-limit = "big"']),
        ('holders = "no"', ['holders = "no"', "true or false"]),
        ("itterations = 20", ["itterations = 20", "unknown key"]),
        ('targets = "w.py"', ['targets = "w.py"', "list"]),
        ("targets = [3]", ["targets[0] = 3", "TARGET"]),
        ('targets = [{ path = "w.py" }]', ['targets[0].path = "w.py"', "unknown key"]),
        ("targets = [{ iterations = 3 }]", ["targets[0].target = null", "TARGET"]),
        ('targets = [{ target = "w.py", args = "x" }]', ['targets[0].args = "x"', "strings"]),
        ('targets = [{ target = "w.py", iterations = 0 }]', ["targets[0].iterations = 0"]),
    ],
)
def test_a_config_error_names_the_key_and_the_value(tmp_path, body, fragments):
    write(tmp_path, f"[tool.leakscope]\n{body}\n")
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path)
    message = info.value.message
    assert "pyproject.toml: [tool.leakscope]" in message
    for fragment in fragments:
        assert fragment in message
    assert info.value.exit_code == 2


def test_invalid_toml_names_the_file(tmp_path):
    write(tmp_path, "[tool.leakscope\niterations = 3\n")
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path)
    assert "pyproject.toml: not valid TOML" in info.value.message
