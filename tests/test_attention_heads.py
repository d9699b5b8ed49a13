"""The shipped head weights of multi_head_attention's estimate (models/techniques/attention_heads/): what
`bench/provenance.py fit --mbpp $MBPP` wrote for the default model, read the way the worker reads them."""

from __future__ import annotations

import json

from codegen.provenance.heads import read_weights
from models.settings import Settings
from models.techniques import multi_head_attention as mha


def test_the_default_models_weights_ship_with_the_command_and_data_that_made_them():
    model = Settings(_env_file=None).local_model
    payload = mha.read_heads(model)
    assert payload is not None, f"no head weights for {model}"
    assert payload["command"] == "bench/provenance.py fit --mbpp $MBPP"
    assert payload["meta"]["fitted_on"] == "MBPP train" and payload["meta"]["cases"] == 80
    weights = read_weights(model)
    assert weights is not None
    # SmolLM2-135M: 30 layers of 9 query heads, one non-negative weight each
    assert tuple(weights.shape) == (30, 9) and (weights >= 0).all() and weights.sum() > 0


def test_the_estimate_is_offered_exactly_where_its_acceptance_passed():
    for path in mha.HEADS_DIR.glob("*.json"):
        accepted = bool(json.loads(path.read_text()).get("acceptance", {}).get("accepted"))
        assert (path.stem in mha.ESTIMATE_MODELS) == accepted
