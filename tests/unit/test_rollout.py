import torch

from purld.rollout import Sampler, completion_token_logps
from purld.rollout.sampler import completion_mask_from_ids


def test_mask_up_to_and_including_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]])
    mask, truncated = completion_mask_from_ids(ids, eos_token_id=2)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert truncated.tolist() == [False, True]


def test_sample_shapes_and_logps_match_a_forward_pass(student, task, make_batch, tmp_path):
    """The recorded sampling log-probs are π_old: a training forward pass must reproduce them."""
    model, tokenizer = student
    batch = make_batch(task, tmp_path, size=3)
    torch.manual_seed(0)
    sampler = Sampler(num_candidates=4, max_new_tokens=12, temperature=0.7)
    rollout = sampler.sample(model, tokenizer, batch)
    B, K, T = rollout.completion_ids.shape
    assert (B, K) == (3, 4) and T <= 12
    assert len(rollout.texts) == 3 and all(len(row) == 4 for row in rollout.texts)
    assert rollout.sampling_token_logps.shape == (B, K, T) and rollout.is_truncated.shape == (B, K)
    forward = completion_token_logps(
        model,
        batch.prompt_ids.repeat_interleave(K, 0),
        batch.prompt_mask.repeat_interleave(K, 0),
        rollout.completion_ids.reshape(B * K, T),
        rollout.completion_mask.reshape(B * K, T),
        temperature=0.7,
    ).reshape(B, K, T)
    difference = (forward - rollout.sampling_token_logps).masked_fill(~rollout.completion_mask, 0)
    assert difference.abs().max() < 1e-4
    assert (rollout.sampling_token_logps <= 0).all()


def test_suppress_eos_gives_full_length(student, task, make_batch, tmp_path):
    model, tokenizer = student
    batch = make_batch(task, tmp_path, size=2)
    rollout = Sampler(num_candidates=3, max_new_tokens=9, suppress_eos=True).sample(model, tokenizer, batch)
    assert rollout.completion_mask.all() and rollout.completion_ids.shape[-1] == 9
    assert rollout.is_truncated.all()


def test_sampling_leaves_training_mode(student, task, make_batch, tmp_path):
    model, tokenizer = student
    model.train()
    Sampler(num_candidates=2, max_new_tokens=4).sample(model, tokenizer, make_batch(task, tmp_path, size=1))
    assert model.training


def test_shared_prompt_log_probs_equal_the_full_forward():
    """Reading each prompt once and sharing its KV cache over K completions changes no number."""
    from purld.rollout.logprobs import completion_token_logps, completion_token_logps_shared_prompt
    from purld.students.tiny import TinyLlamaStudent

    model, tokenizer = TinyLlamaStudent(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).load()
    model.eval()
    prompts = tokenizer(["12+5=", "Reference: 3+4=7\n999+1="], padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    completions = tokenizer([t + tokenizer.eos_token for t in ["ab", "hello there", "x", "yyyyyy"]], padding=True,
                            padding_side="right", add_special_tokens=False, return_tensors="pt")
    mask = completions["attention_mask"].bool()
    with torch.no_grad():
        full = completion_token_logps(model, prompts["input_ids"].repeat_interleave(2, 0),
                                      prompts["attention_mask"].bool().repeat_interleave(2, 0), completions["input_ids"], mask)
        shared = completion_token_logps_shared_prompt(model, prompts["input_ids"], prompts["attention_mask"].bool(), completions["input_ids"], mask)
    assert torch.allclose(full[mask], shared[mask], atol=1e-5)
