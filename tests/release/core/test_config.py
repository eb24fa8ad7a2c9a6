"""YAML configuration: a bad file fails with the file name, the key path and what is allowed."""
from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from release.core.config import ConfigError, load_yaml_model


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = Field(gt=0, le=1)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: Inner
    items: list[int] = []


def write(tmp_path, text, name="conf.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_valid_file_loads(tmp_path):
    m = load_yaml_model(write(tmp_path, "name: a\ninner: {rate: 0.5}\nitems: [1, 2]\n"), Outer)
    assert m == Outer(name="a", inner=Inner(rate=0.5), items=[1, 2])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such configuration file\."):
        load_yaml_model(tmp_path / "nope.yaml", Outer)


def test_not_yaml(tmp_path):
    p = write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"conf\.yaml: not valid YAML"):
        load_yaml_model(p, Outer)


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("", "NoneType"), ("just text\n", "str")])
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    with pytest.raises(ConfigError, match=f"expected a mapping at the top level, got {kind}"):
        load_yaml_model(write(tmp_path, text), Outer)


def test_validation_error_names_file_nested_key_path_and_value(tmp_path):
    p = write(tmp_path, "name: a\ninner: {rate: 2.5}\nitems: [1, x]\n")
    with pytest.raises(ConfigError) as e:
        load_yaml_model(p, Outer)
    lines = str(e.value).splitlines()
    assert len(lines) == 2  # every problem, one per line
    assert lines[0].startswith(f"{p}: inner.rate: ") and "less than or equal to 1" in lines[0]
    assert lines[0].endswith("(got 2.5)")
    assert lines[1].startswith(f"{p}: items.1: ") and lines[1].endswith("(got 'x')")


def test_unknown_and_missing_keys_are_named(tmp_path):
    p = write(tmp_path, "nmae: a\ninner: {rate: 0.5}\n")
    with pytest.raises(ConfigError) as e:
        load_yaml_model(p, Outer)
    msg = str(e.value)
    assert f"{p}: name: Field required" in msg
    assert f"{p}: nmae: Extra inputs are not permitted (got 'a')" in msg


def test_yaml_is_loaded_safely(tmp_path):
    p = write(tmp_path, "name: !!python/object/apply:os.system ['true']\ninner: {rate: 0.5}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml_model(p, Outer)



@pytest.mark.parametrize("name", ["FRAUDCD_APPROVAL_TIMEOUT_S", "FRAUDCD_DECISION_TIMEOUT_S", "FRAUDCD_ROLLOUT_TIMEOUT_S"])
@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1.5"])
def test_a_bad_wait_is_an_error_naming_the_variable(monkeypatch, name, raw):
    from release.core.settings import waits

    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=f"{name} must be a whole number of seconds greater than 0 .*got '{raw}'"):
        waits()


def test_waits_come_from_the_environment_or_their_bounded_defaults(monkeypatch):
    from release.core.settings import waits

    for name in ("FRAUDCD_APPROVAL_TIMEOUT_S", "FRAUDCD_DECISION_TIMEOUT_S", "FRAUDCD_ROLLOUT_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    assert (waits().approval_s, waits().decision_s, waits().rollout_s) == (3 * 86400, 3 * 86400, 30 * 86400)
    monkeypatch.setenv("FRAUDCD_DECISION_TIMEOUT_S", " 600 ")
    assert waits().decision_s == 600 and waits().approval_s == 3 * 86400
