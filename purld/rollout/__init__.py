"""K candidates per prompt from the current policy: token ids, masks, sampling log-probs."""

from purld.rollout.logprobs import completion_token_logps, stack_prompt_and_completion
from purld.rollout.sampler import Sampler, StaticDecoderSampler
from purld.rollout.vllm_engine import VLLMSampler  # imports vLLM only when it samples

__all__ = ["Sampler", "StaticDecoderSampler", "VLLMSampler", "completion_token_logps", "stack_prompt_and_completion"]
