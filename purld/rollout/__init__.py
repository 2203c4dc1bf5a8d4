"""K candidates per prompt from the current policy: token ids, masks, sampling log-probs."""

from purld.rollout.logprobs import completion_token_logps, stack_prompt_and_completion
from purld.rollout.sampler import Sampler, StaticDecoderSampler

__all__ = ["Sampler", "StaticDecoderSampler", "completion_token_logps", "stack_prompt_and_completion"]
