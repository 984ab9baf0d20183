"""A config's numbers are numbers: never true or false, never YAML 1.1's octal,
sexagesimal or underscored forms, never digits other than 0-9; an integer is never
1000.0. Every number of every config model is held to it, in every file."""

from __future__ import annotations

import importlib
import pkgutil
import typing
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

import aishell.config
from aishell.config.fields import _plain_number
from aishell.config.models import load_config
from aishell.errors import ConfigError
from tests.helpers import config_written


def _config_models() -> list[type[BaseModel]]:
    found = []
    for module in pkgutil.iter_modules(aishell.config.__path__):
        loaded = importlib.import_module(f"aishell.config.{module.name}")
        for value in vars(loaded).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == loaded.__name__
            ):
                found.append(value)
    return found


def _plain(metadata: Any) -> bool:
    return any(getattr(m, "func", None) is _plain_number for m in metadata)


def _bare_numbers(annotation: Any, metadata: Any = ()) -> bool:
    """Whether the annotation holds int or float without the config's number check."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _bare_numbers(annotation.__origin__, (*metadata, *annotation.__metadata__))
    if annotation in (int, float):
        return not _plain(metadata)
    return any(_bare_numbers(arg) for arg in typing.get_args(annotation))


def test_every_number_of_every_config_model_is_a_plain_number():
    models = _config_models()
    assert len(models) > 10, models
    bare = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if _bare_numbers(field.annotation, field.metadata)
    ]
    assert not bare, bare


PURGE = ["log_cleanup_agent", "purge"]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("on", "input should be a number in the digits 0-9 (got 'on')"),
        ("yes", "input should be a number in the digits 0-9 (got 'yes')"),
        ("true", "input should be a number, not true or false"),
        ("010", "input should be a number in the digits 0-9 (got '010')"),
        ("1:30", "input should be a number in the digits 0-9 (got '1:30')"),
        ("1_000", "input should be a number in the digits 0-9 (got '1_000')"),
        ("0x10", "input should be a number in the digits 0-9 (got '0x10')"),
        ("'١٢٣'", "input should be a number in the digits 0-9"),
        ("' 12 '", "input should be a number in the digits 0-9"),
        ("1000.0", "input should be a valid integer (got 1000.0)"),
        ("1e3", "input should be a valid integer (got 1000.0)"),
    ],
)
def test_a_batch_size_that_is_no_plain_integer_is_refused(home, written, expected):
    message = config_written(home, "agents/log_cleanup.yaml", [*PURGE, "batch_size"], written)
    assert f"log_cleanup_agent.purge.batch_size: {expected}" in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("file", "path", "written", "key"),
    [
        ("agents/log_cleanup.yaml", [*PURGE, "retention_days"], "on", "purge.retention_days"),
        (
            "agents/log_cleanup.yaml",
            ["log_cleanup_agent", "safety_constraints", 0, "max_share"],
            "yes",
            "safety_constraints.0.max_share",
        ),
        ("aishell.yaml", ["targets", "demo", "lock_timeout_ms"], "0o17", "lock_timeout_ms"),
        ("aishell.yaml", ["planner", "llm", "tries"], "true", "planner.llm.tries"),
        ("aishell.yaml", ["state", "busy_timeout_ms"], "5_000", "state.busy_timeout_ms"),
    ],
)
def test_words_and_other_forms_are_no_number_anywhere(home, file, path, written, key):
    message = config_written(home, file, path, written)
    assert f"{key}: input should be a number" in message, message
    assert "\n" not in message


def test_a_quoted_plain_number_and_an_exponent_are_numbers(home):
    config_file = home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(config_file.read_text())
    data["log_cleanup_agent"].setdefault("purge", {}).update(
        {"retention_days": "PLACE1", "sleep_ms": "PLACE2", "batch_size": "PLACE3"}
    )
    text = yaml.safe_dump(data)
    text = text.replace("PLACE1", "45").replace("PLACE2", "2.5e1").replace("PLACE3", "'1000'")
    config_file.write_text(text)
    purge = load_config(home=home).agent("log_cleanup").purge
    assert (purge.retention_days, purge.sleep_ms, purge.batch_size) == (45, 25.0, 1000)


def test_a_maintenance_window_of_yes_and_no_is_refused(home):
    config_file = home / "config" / "agents" / "maintenance.yaml"
    data = yaml.safe_load(config_file.read_text())
    data["maintenance_agent"]["safety_constraints"].append(
        {"type": "maintenance_window", "allowed_hours": "PLACEHOLDER"}
    )
    config_file.write_text(yaml.safe_dump(data).replace("PLACEHOLDER", "[yes, no]"))
    with pytest.raises(ConfigError) as refused:
        load_config(home=home).agent("maintenance")
    message = str(refused.value)
    assert "allowed_hours.0: input should be a number in the digits 0-9 (got 'yes')" in message


@pytest.mark.parametrize("port", ["\uff15\uff14\uff13\uff12", "5_432", "\u0665\u0664\u0663\u0662"])
def test_a_url_port_in_other_digits_is_refused(home, port):
    from click.testing import CliRunner

    from aishell.cli import cli

    url = f"postgresql://postgres@127.0.0.1:{port}/test"
    done = CliRunner().invoke(cli, ["targets", "add", "odd", url])
    assert done.exit_code == 2, done.output
    assert "port is not a number in the digits 0-9" in done.output, done.output
    assert port not in done.output


def test_a_config_url_port_in_other_digits_is_refused(home):
    config_file = home / "config" / "aishell.yaml"
    data = yaml.safe_load(config_file.read_text())
    data["targets"]["odd"] = {"url": "postgresql://postgres@127.0.0.1:\uff15\uff14\uff13\uff12/t"}
    config_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="port is not a number in the digits 0-9"):
        load_config(home=home)
