"""How a sequence picks its tokens: llama.cpp sampler chains, and the log-probabilities of each pick.

Every function here calls into llama.cpp and runs on the scheduler's thread.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from backends.errors import EngineFailure
from backends.types import SamplingParams, TokenLogprob

if TYPE_CHECKING:
    from backends.llama.engine import Engine

__all__ = ["free_sampler", "log_softmax", "make_sampler", "sample", "token_logprob"]


def make_sampler(engine: Engine, s: SamplingParams, grammar: str | None, seed: int | None) -> Any:
    """A sampler chain for one sequence: biases, penalties, the grammar, then greedy or top-p +
    temperature + a seeded draw (a random seed when ``seed`` is None)."""
    lc = engine.lc
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if s.logit_bias:
        biases = (lc.llama_logit_bias * len(s.logit_bias))(
            *(lc.llama_logit_bias(token=t, bias=b) for t, b in s.logit_bias))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(engine.n_vocab, len(s.logit_bias), biases))
    if s.presence_penalty or s.frequency_penalty:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_penalties(
            engine.n_vocab, engine.n_ctx_seq, 1.0, s.frequency_penalty, s.presence_penalty))
    if grammar is not None:
        sampler = engine.grammar_sampler(grammar)
        if not sampler:
            lc.llama_sampler_free(chain)
            raise EngineFailure("llama.cpp could not build the output grammar.")
        lc.llama_sampler_chain_add(chain, sampler)
    if s.temperature <= 0.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain
    if s.top_p < 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(s.top_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(s.temperature))
    seed = seed if seed is not None else random.getrandbits(32)
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


def free_sampler(engine: Engine, sampler: Any) -> None:
    engine.lc.llama_sampler_free(sampler)


def sample(engine: Engine, sampler: Any, index: int) -> int:
    """The token ``sampler`` picks from the batch's ``index``-th logits (-1: the last)."""
    return int(engine.lc.llama_sampler_sample(sampler, engine.ctx, index))


def log_softmax(logits: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Log-probabilities from logits, computed in float64 without overflow."""
    values: npt.NDArray[np.float64] = logits.astype(np.float64)
    peak = values.max()
    out: npt.NDArray[np.float64] = values - (peak + np.log(np.exp(values - peak).sum()))
    return out


def token_logprob(engine: Engine, index: int, token: int, top: int) -> TokenLogprob:
    """The chosen token's log-probability under the model, and the ``top`` likeliest tokens."""
    logprobs = log_softmax(engine.logits(index))

    def entry(t: int) -> TokenLogprob:
        raw = engine.piece(t)
        return TokenLogprob(token=raw.decode(errors="replace"), bytes=raw, logprob=float(logprobs[t]))

    alternatives: tuple[TokenLogprob, ...] = ()
    if top > 0:
        best = np.argpartition(-logprobs, top)[:top]
        best = best[np.argsort(-logprobs[best], kind="stable")]
        alternatives = tuple(entry(int(t)) for t in best)
    chosen = entry(token)
    return TokenLogprob(token=chosen.token, bytes=chosen.bytes, logprob=chosen.logprob, top=alternatives)
