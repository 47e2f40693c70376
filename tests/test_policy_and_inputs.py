from __future__ import annotations

from pathlib import Path

import pytest

from supervisor import ConfigError, InputError, ModelNotFoundError, Policy, Supervisor, load_primary
from supervisor.holdback import Holdback
from supervisor.messages import validate_max_tokens, validate_messages


def test_default_policy_is_valid_and_documented() -> None:
    policy = Policy()
    assert policy.window_tokens > policy.checkpoint_every  # windows overlap by default
    assert policy.on_scorer_error == "fail_closed"
    for name, field in Policy.model_fields.items():
        assert field.description, f"{name} has no description"


def test_unknown_policy_key_is_named() -> None:
    with pytest.raises(ConfigError, match="act_treshold"):
        Policy.from_mapping({"act_treshold": 0.5})


def test_policy_file_toml_json_and_table(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text("act_threshold = 0.7\nmax_rollbacks = 2\n[category_thresholds]\nhate = 0.3\n")
    policy = Policy.from_file(toml)
    assert policy.act_threshold == 0.7 and policy.max_rollbacks == 2
    assert policy.act_threshold_for("hate") == 0.3 and policy.act_threshold_for("violence") == 0.7
    table = tmp_path / "t.toml"
    table.write_text("[policy]\ncheckpoint_every = 4\n")
    assert Policy.from_file(table).checkpoint_every == 4
    js = tmp_path / "p.json"
    js.write_text('{"watch_threshold": 0.2}')
    assert Policy.from_file(js).watch_threshold == 0.2


def test_policy_file_that_does_not_parse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("act_threshold = = 0.5\n")
    with pytest.raises(ConfigError, match="does not parse"):
        Policy.from_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        Policy.from_file(tmp_path / "missing.toml")
    yaml = tmp_path / "p.yaml"
    yaml.write_text("a: 1")
    with pytest.raises(ConfigError, match="accepted: .toml, .json"):
        Policy.from_file(yaml)


def test_inconsistent_policy_values() -> None:
    with pytest.raises(ConfigError, match="watch_threshold"):
        Policy.from_mapping({"watch_threshold": 0.9, "act_threshold": 0.5})
    with pytest.raises(ConfigError, match="window_tokens"):
        Policy.from_mapping({"window_tokens": 4, "checkpoint_every": 8})
    with pytest.raises(ConfigError, match="unknown category 'rudeness'"):
        Policy.from_mapping({"category_thresholds": {"rudeness": 0.5}})
    with pytest.raises(ConfigError, match="max_rollbacks"):
        Policy.from_mapping({"max_rollbacks": -1})


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "messages is empty"),
        ([{"role": "wizard", "content": "hi"}], r"messages\[0\].role is 'wizard'; accepted roles"),
        ([{"role": "user", "content": 3}], r"messages\[0\].content must be a string"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "ends with an assistant"),
        ("hello", "must be a list"),
        (["hello"], r"messages\[0\] must be a dict"),
    ],
)
def test_bad_messages(messages: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        validate_messages(messages)


@pytest.mark.parametrize("value", [-1, 0, 10**6, True, 3.5, "12"])
def test_bad_max_tokens(value: object) -> None:
    with pytest.raises(InputError, match="max_tokens"):
        validate_max_tokens(value)


def test_generate_rejects_bad_input_before_decoding(tiny_primary) -> None:  # type: ignore[no-untyped-def]
    sup = Supervisor()
    with pytest.raises(InputError, match="max_tokens is -5"):
        sup.generate(tiny_primary, [{"role": "user", "content": "hi"}], max_tokens=-5)
    with pytest.raises(InputError, match="exactly one of messages"):
        sup.generate(tiny_primary, [{"role": "user", "content": "hi"}], prompt="also")
    with pytest.raises(InputError, match="temperature"):
        sup.generate(tiny_primary, [{"role": "user", "content": "hi"}], temperature=-1)
    with pytest.raises(InputError, match="exceeds the context"):
        sup.generate(tiny_primary, prompt="hello", max_tokens=600)


def test_unknown_names_are_clear() -> None:
    with pytest.raises(ModelNotFoundError, match="unknown primary 'gpt-17'; accepted"):
        load_primary("gpt-17")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_primary("/nowhere/model.gguf")
    with pytest.raises(ModelNotFoundError, match="unknown scorer 'oracle'; available: .*lexical"):
        Supervisor(scorer="oracle")
    with pytest.raises(ConfigError, match="policy must be"):
        Supervisor(policy=42)  # type: ignore[arg-type]


def test_holdback_never_retracts() -> None:
    holdback = Holdback()
    assert holdback.release("Hello") == "Hello"
    assert holdback.release("Hello, world") == ", world"
    assert holdback.release("Hello") == ""  # a shorter prefix releases nothing, retracts nothing
    assert holdback.release("Help") == ""  # an inconsistent one neither
    assert holdback.released == "Hello, world" and holdback.withheld_inconsistent == 1
