from pathlib import Path

import pytest

from aishell.config.models import load_config
from aishell.errors import ConfigError


def write(home: Path, text: str) -> None:
    (home / "config" / "aishell.yaml").write_text(text)


def test_shipped_config_loads(config):
    name, target = config.target(None)
    assert name == "demo"
    assert target.environment == "development"
    assert config.state_url == f"sqlite:///{config.home / 'state.db'}"
    agent = config.agent("maintenance")
    assert agent.defaults.safety_level == "moderate"
    assert "index_manage" in agent.capabilities


def test_without_a_config_folder_the_builtin_one_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("AISHELL_CONFIG", raising=False)
    config = load_config(home=tmp_path)
    assert config.target(None)[0] == "demo"
    assert config.state_url.endswith(str(tmp_path / "state.db"))


def test_unknown_key_names_file_key_and_what_is_expected(home):
    write(home, "targets:\n  demo:\n    url: sqlite:///demo.db\n    enviroment: production\n")
    with pytest.raises(ConfigError) as err:
        load_config(home=home)
    message = str(err.value)
    assert "aishell.yaml" in message
    assert "targets.demo.enviroment: unknown key" in message
    assert "connect_timeout_seconds, description, environment, lock_timeout_ms" in message


def test_bad_type_is_one_line(home):
    write(home, "targets:\n  demo:\n    url: sqlite:///demo.db\n    environment: prod\n")
    with pytest.raises(ConfigError) as err:
        load_config(home=home)
    message = str(err.value)
    assert "targets.demo.environment" in message and "'production'" in message
    assert "\n" not in message


def test_missing_required_key(home):
    write(home, "targets:\n  demo:\n    environment: test\n")
    with pytest.raises(ConfigError, match=r"targets\.demo\.url: required key is missing"):
        load_config(home=home)


def test_malformed_yaml_names_the_line(home):
    write(home, "targets:\n  demo: [unclosed\n")
    with pytest.raises(ConfigError, match=r"aishell\.yaml:\d+: invalid YAML"):
        load_config(home=home)


def test_default_target_must_exist(home):
    write(home, "default_target: prod\ntargets:\n  demo:\n    url: sqlite:///demo.db\n")
    with pytest.raises(
        ConfigError, match="default_target: 'prod' is not a target; targets are: demo"
    ):
        load_config(home=home)


def test_unknown_target_lists_the_known_ones(config):
    with pytest.raises(ConfigError, match="Unknown target 'nope'.*targets .* are: demo"):
        config.target("nope")


def test_agent_config_rejects_unknown_capability(home):
    path = home / "config" / "agents" / "maintenance.yaml"
    path.write_text(path.read_text().replace("index_manage", "drop_everything"))
    config = load_config(home=home)
    with pytest.raises(ConfigError, match="capabilities.3: unknown capability 'drop_everything'"):
        config.agent("maintenance")


def test_agent_config_rejects_bad_safety_level(edit_config):
    with pytest.raises(ConfigError, match="safety_level.*'strict', 'moderate' or 'permissive'"):
        edit_config(maintenance={"default_config": {"safety_level": "yolo"}}).agent("maintenance")


def test_explicit_config_path_that_does_not_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", home=tmp_path)


def test_a_state_store_password_env_that_is_not_set_is_one_line(home: Path, monkeypatch):
    monkeypatch.delenv("AISHELL_NO_SUCH_STATE_PW", raising=False)
    path = home / "config" / "aishell.yaml"
    path.write_text(
        path.read_text().replace(
            "state:\n  url: sqlite:///state.db",
            "state:\n  url: postgresql+psycopg://aishell@127.0.0.1/state\n"
            "  password_env: AISHELL_NO_SUCH_STATE_PW",
        )
    )
    config = load_config(home=home)
    with pytest.raises(ConfigError) as err:
        config.state_url()
    assert str(err.value) == (
        "The state store's password: the environment variable AISHELL_NO_SUCH_STATE_PW "
        f"(state.password_env in {path}) is not set; export AISHELL_NO_SUCH_STATE_PW where "
        "aishell runs (the scheduler's service too), or change state.password_env"
    )
