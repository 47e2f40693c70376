"""The state probe reads the primary's own hidden states: trained here on a tiny model, then used
during generation without any extra forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import recorded_forward_shapes

from supervisor import Policy, Supervisor, load_primary
from supervisor.lab.train import main as train_main
from supervisor.scorers.state_probe import StateProbeScorer

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="module")
def probe_file(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (DATA / "davidson").is_dir():
        pytest.skip("shared/data is not beside the repository")
    out = tmp_path_factory.mktemp("probe") / "probe.json"
    code = train_main(["--state-probe", "--primary", str(tiny_model_dir), "--probe-train", "80",
                       "--davidson-limit", "400", "--data", str(DATA), "--out", str(out)])
    assert code == 0
    return out


def test_training_writes_a_probe_with_metrics(probe_file: Path) -> None:
    payload = json.loads(probe_file.read_text())
    assert payload["hidden_size"] == 32 and 0 <= payload["layer"] <= 2
    metrics = payload["heads"]["toxicity"]["metrics"]
    assert {"threshold_raw", "auroc_test_all", "fpr_xstest_safe"} <= metrics.keys()
    assert len(payload["heads"]["toxicity"]["weights"]) == 32


def test_generation_measures_from_hidden_states_without_extra_forward(tiny_model_dir: Path, probe_file: Path) -> None:
    primary = load_primary(str(tiny_model_dir))
    probe = StateProbeScorer(primary, probe_file)
    assert primary.probe_layer == probe.layer
    # measure only: no rerank (no forecast into the watch zone either), no rollback
    policy = Policy(watch_threshold=1.0, act_threshold=1.0, forecast_horizon=0.0)
    with recorded_forward_shapes(primary.model) as shapes:
        result = Supervisor(scorer=probe, policy=policy).generate(
            primary, [{"role": "user", "content": "hello there"}], max_tokens=30, seed=0, temperature=1.0)
    batch_sizes = [batch for batch, _ in shapes]
    assert result.usage.scorer_calls >= 2 and len(result.trace) == result.usage.scorer_calls
    # the prompt (all but its last token in one batch, then the last one) plus one single-sequence step per
    # token: the probe never ran the model on text
    assert set(batch_sizes) == {1}
    assert len(batch_sizes) == 2 + result.usage.generated_tokens
    # the same windows scored from text (a separate forward pass) agree with the hidden-state measurement
    text_risk = probe.assess([result.text])[0].risk
    assert 0.0 <= text_risk <= 1.0


def test_probe_for_another_model_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from supervisor import ConfigError

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"primary": "other", "hidden_size": 999, "layer": 1, "mean": [], "scale": [],
                                 "heads": {}}))
    with pytest.raises(ConfigError, match="hidden size 999"):
        StateProbeScorer(load_primary(str(tiny_model_dir)), wrong)
