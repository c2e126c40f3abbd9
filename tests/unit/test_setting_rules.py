"""One rule per setting, for the command line, pyproject.toml and the pytest plugin alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from leakscope.cli.options import checked, flag
from leakscope.drive.pytest_plugin import LeakscopeUsageError, _settings
from leakscope.model import config
from leakscope.model.errors import ConfigError, UsageError
from leakscope.model.settings import MAX_FRAMES, SettingError, check_setting


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("iterations", 1, 1),
    ("warmup", 0, 0),
    ("warmup", "auto", "auto"),
    ("frames", MAX_FRAMES, MAX_FRAMES),
    ("top", 0, 0),
    ("timeout", 2, 2.0),
    ("memory_limit", "512MiB", 512 * 1024 * 1024),
    ("memory_limit", 4096, 4096),
    ("max_growth", "0B", 0),
    ("max_growth", 0, 0),
    ("holders", False, False),
    ("mode", "fast", "fast"),
    ("sample", "auto", 0),
    ("sample", 2, 2),
    ("trace_units", 0, 0),
    ("trace_units", 32, 32),
])
def test_a_good_value_passes_converted(name, value, expected):
    assert check_setting(name, value) == expected


@pytest.mark.parametrize(("name", "value"), [
    ("iterations", 0), ("iterations", True), ("iterations", "5"), ("iterations", 2.5),
    ("warmup", -1), ("warmup", "soon"),
    ("frames", 0), ("frames", MAX_FRAMES + 1),
    ("top", -1),
    ("timeout", 0), ("timeout", float("inf")), ("timeout", float("nan")), ("timeout", True),
    ("memory_limit", 0), ("memory_limit", "big"), ("memory_limit", "9" * 400),
    ("max_growth", -1), ("max_growth", [1]), ("max_growth", "4XB"),
    ("holders", "no"),
    ("mode", "slow"),
    ("sample", 0),
    ("trace_units", 20),
])
def test_a_bad_value_is_refused_with_what_would_do(name, value):
    with pytest.raises(SettingError) as info:
        check_setting(name, value)
    assert info.value.expected and info.value.name == name


def test_an_unknown_setting_is_a_programming_error():
    with pytest.raises(KeyError):
        check_setting("iteration", 5)


@pytest.mark.parametrize(("name", "cli", "toml", "marker"), [
    ("iterations", "0", "0", 0),
    ("warmup", "soon", '"soon"', "soon"),
    ("frames", "70000", "70000", 70000),
])
def test_the_three_faces_say_the_same_words(tmp_path: Path, name, cli, toml, marker):
    """The command line, the config file and the marker name their own spelling of the
    value, then the rule's one phrase of what would do."""
    expected = pytest.raises(SettingError, check_setting, name, marker).value.expected
    with pytest.raises(UsageError) as from_cli:
        checked(name, cli)
    assert from_cli.value.message == f"{flag(name)} {cli}: {expected}"
    (tmp_path / "pyproject.toml").write_text(f"[tool.leakscope]\n{name} = {toml}\n")
    with pytest.raises(ConfigError) as from_config:
        config.load(tmp_path)
    assert from_config.value.message.endswith(f"{name} = {toml}: {expected}")
    with pytest.raises(LeakscopeUsageError) as from_marker:
        _settings(**{name: marker})
    assert str(from_marker.value) == f"{name}={marker!r}: {expected}"
