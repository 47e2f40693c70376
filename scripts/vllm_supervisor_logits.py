"""A vLLM (V1 engine) logits processor that applies a supervisor's per-request, per-position ban inside vLLM.

``logit_bias`` applies the same bias at every position of a request. After a rollback the logit engine bans the
rejected token only at the position where it was rejected; this processor lets a vLLM request do the same:

    extra_body={"vllm_xargs": {"supervisor_ban_first": [19923, 63]}}   # banned at the first generated token only

Loaded by the server (this file's folder on PYTHONPATH): ``--logits-processors
vllm_supervisor_logits:SupervisorFirstTokenBan`` (``scripts/vllm_server.sh`` does this). It runs in vLLM's own
venv (torch, vllm), not the project's; requests without the argument are untouched (no per-step cost).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

ARG = "supervisor_ban_first"


def _ban_ids(params: SamplingParams) -> list[int] | None:
    raw = (params.extra_args or {}).get(ARG)
    if raw is None:
        return None
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ValueError(f"vllm_xargs.{ARG} must be a non-empty list of token ids (integers >= 0), got {raw!r}")
    return [int(v) for v in values]


class SupervisorFirstTokenBan(AdapterLogitsProcessor):
    """Bans ``vllm_xargs.supervisor_ban_first`` token ids at the request's first generated position."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        _ban_ids(sampling_params)  # a malformed argument is an HTTP 400, not a crash in the engine

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        super().__init__(vllm_config, device, is_pin_memory)
        self.vocab_size = int(vllm_config.model_config.get_vocab_size())

    def is_argmax_invariant(self) -> bool:
        return False  # a ban changes the greedy choice

    def new_req_logits_processor(self, params: SamplingParams) -> Any:
        ids = _ban_ids(params)
        if ids is None:
            return None
        banned = [i for i in ids if i < self.vocab_size]

        def apply(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            if not output_ids:  # the first token after the prompt (and the checked prefix)
                logits[banned] = float("-inf")
            return logits

        return apply
