"""Target selectors (config/selection.py): names, tag:TAG, globs, unions with ',' and
intersections with '+', in config order; unknown names and tags, malformed selectors and
selectors that pick nothing are one-line UsageErrors naming what exists; a bad tag in
the config is refused at load, naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell.config.models import TargetConfig
from aishell.config.selection import select_from, select_targets, target_tags
from aishell.errors import ConfigError, UsageError

# Not in alphabetical order: the config's order is the one that comes back.
FLEET = {
    "eu-2": TargetConfig(url="sqlite:///eu2.db", tags=["prod", "eu"]),
    "us-1": TargetConfig(url="sqlite:///us1.db", tags=["prod", "us"]),
    "eu-1": TargetConfig(url="sqlite:///eu1.db", tags=["eu"]),
    "lab": TargetConfig(url="sqlite:///lab.db"),
}


def pick(selector: str) -> list[str]:
    return select_from(FLEET, selector, "aishell.yaml")


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ("lab", ["lab"]),
        ("tag:prod", ["eu-2", "us-1"]),
        ("tag:eu", ["eu-2", "eu-1"]),
        ("eu-*", ["eu-2", "eu-1"]),
        ("*", ["eu-2", "us-1", "eu-1", "lab"]),
        ("??-1", ["us-1", "eu-1"]),
        ("tag:prod,eu-*", ["eu-2", "us-1", "eu-1"]),
        ("lab, tag:us", ["us-1", "lab"]),
        ("tag:prod+tag:eu", ["eu-2"]),
        ("tag:prod+eu-*,lab", ["eu-2", "lab"]),
        ("eu-1,eu-1,tag:eu", ["eu-2", "eu-1"]),
        ("nothing-*,lab", ["lab"]),
    ],
)
def test_a_selector_picks_its_targets_in_config_order(selector: str, names: list[str]):
    assert pick(selector) == names


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("db9", "Unknown target 'db9'; targets in aishell.yaml are: eu-2, us-1, eu-1, lab"),
        ("lab,db9", "Unknown target 'db9'; targets in aishell.yaml are: eu-2, us-1, eu-1, lab"),
        ("tag:staging", "Unknown tag 'staging'; tags in aishell.yaml are: eu, prod, us"),
        ("tag:Prod", "'tag:Prod' is not a tag: tags hold lower-case letters, digits, '-' and "),
        ("ap-*", "Target selector 'ap-*' matches no target; targets in aishell.yaml are: "),
        ("tag:us+tag:eu", "Target selector 'tag:us+tag:eu' matches no target"),
        ("", "Target selector '' has an empty part"),
        ("lab,", "Target selector 'lab,' has an empty part"),
        ("tag:eu+", "Target selector part 'tag:eu+' has an empty side of '+'"),
    ],
)
def test_a_selector_that_names_nothing_known_is_one_line_naming_what_exists(
    selector: str, message: str
):
    with pytest.raises(UsageError) as raised:
        pick(selector)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_tags_are_listed_once_and_sorted():
    assert target_tags(FLEET) == ["eu", "prod", "us"]
    with pytest.raises(UsageError, match=r"tags in x.yaml are: \(none\)"):
        select_from({"lab": FLEET["lab"]}, "tag:prod", "x.yaml")


def test_a_loaded_config_selects_by_its_tags_and_names_its_file(edit_config, home: Path):
    config = edit_config(
        {
            "targets": {
                "demo": {"tags": ["dev"]},
                "eu-db": {"url": "sqlite:///eu.db", "tags": ["prod", "eu"]},
            }
        }
    )
    assert config.main.targets["eu-db"].tags == ["prod", "eu"]
    assert select_targets(config, "tag:prod") == ["eu-db"]
    assert select_targets(config, "tag:dev,eu-*") == ["demo", "eu-db"]
    with pytest.raises(UsageError, match=f"tags in {config.path} are: dev, eu, prod$"):
        select_targets(config, "tag:us")


@pytest.mark.parametrize("tag", ["Prod", "eu west", "-x", "x" * 33, ""])
def test_a_bad_tag_in_the_config_is_refused_naming_the_file_and_key(edit_config, tag: str):
    with pytest.raises(ConfigError) as raised:
        edit_config({"targets": {"demo": {"tags": ["ok", tag]}}})
    message = str(raised.value)
    assert "config/aishell.yaml: targets.demo.tags.1: a tag holds lower-case letters" in message


def test_tags_must_be_a_list(edit_config):
    with pytest.raises(ConfigError, match=r"aishell.yaml: targets.demo.tags: "):
        edit_config({"targets": {"demo": {"tags": "prod"}}})
