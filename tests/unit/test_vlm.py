"""Prompts with images through every stage, on the tiny random-init LLaVA (`student=tiny_vlm`)."""

from __future__ import annotations

import pytest
import torch

from purld.types import stack_vision_inputs


@pytest.fixture(scope="module")
def vlm():
    from purld.students import TinyVLMStudent

    student = TinyVLMStudent(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             vision_hidden_size=32, vision_layers=1, vision_heads=2, seed=0)
    model, tokenizer = student.load()
    return model.eval(), tokenizer, student.load_processor(tokenizer)


@pytest.fixture(scope="module")
def shapes():
    from purld.tasks import ShapesTask

    return ShapesTask(num_train=16, num_heldout=4, seed=0)


def datamodule(vlm, task, tmp_path):
    from purld.anchors import AnchorCache
    from purld.data import AnchorDataModule
    from purld.teachers import ReferenceTeacher

    _, tokenizer, processor = vlm
    dm = AnchorDataModule(task, ReferenceTeacher(), AnchorCache(tmp_path / "cache.sqlite"), tokenizer, processor=processor)
    dm.prepare_data()
    dm.setup()
    return dm


def test_a_batch_carries_each_prompts_pixels_and_its_image_tokens(vlm, shapes, tmp_path):
    model, tokenizer, processor = vlm
    batch = datamodule(vlm, shapes, tmp_path).collate(datamodule(vlm, shapes, tmp_path).train_items[:3])
    assert len(batch.vision_inputs) == 3
    assert all(inputs["pixel_values"].shape == (1, 3, 64, 64) for inputs in batch.vision_inputs)
    image_token = model.config.image_token_id
    assert ((batch.prompt_ids == image_token) & batch.prompt_mask).sum(-1).tolist() == [4, 4, 4]  # (64 / 32)² patches
    assert stack_vision_inputs(batch.vision_inputs, repeats=2)["pixel_values"].shape == (6, 3, 64, 64)
    assert torch.equal(stack_vision_inputs(batch.vision_inputs, repeats=2)["pixel_values"][1], batch.vision_inputs[0]["pixel_values"][0])


def test_the_sampling_log_probs_equal_a_training_forward_and_depend_on_the_picture(vlm, shapes, tmp_path):
    from purld.rollout.logprobs import completion_token_logps
    from purld.rollout.sampler import Sampler, candidates_from_texts

    model, tokenizer, _ = vlm
    dm = datamodule(vlm, shapes, tmp_path)
    batch = dm.collate(dm.train_items[:2])
    torch.manual_seed(0)
    rollout = Sampler(num_candidates=3, max_new_tokens=8).sample(model, tokenizer, batch)
    ids, mask = rollout.completion_ids.flatten(0, 1), rollout.completion_mask.flatten(0, 1)
    shared = completion_token_logps(model, batch.prompt_ids, batch.prompt_mask, ids, mask, vision=batch.vision_inputs)
    sampled = rollout.sampling_token_logps.flatten(0, 1)
    assert (shared - sampled).abs()[mask].max() < 1e-4
    # Each prompt repeated for its K rows, pixels repeated with it (where prompts cannot be shared): the same numbers.
    # (On text answers: a random-init model samples the image token too, which a forward with pixels refuses.)
    texts = candidates_from_texts(tokenizer, [["The answer is 2.", "red", "3"], ["I see", "blue", "4"]], "cpu")
    ids, mask = texts.completion_ids.flatten(0, 1), texts.completion_mask.flatten(0, 1)
    shared = completion_token_logps(model, batch.prompt_ids, batch.prompt_mask, ids, mask, vision=batch.vision_inputs)
    repeated = completion_token_logps(model, batch.prompt_ids.repeat_interleave(3, 0), batch.prompt_mask.repeat_interleave(3, 0),
                                      ids, mask, vision=tuple(v for v in batch.vision_inputs for _ in range(3)))
    assert (repeated - shared).abs()[mask].max() < 1e-4
    # The pixels are read: the other prompt's picture gives other log-probs.
    swapped = completion_token_logps(model, batch.prompt_ids, batch.prompt_mask, ids, mask, vision=batch.vision_inputs[::-1])
    assert (swapped - shared).abs()[mask].max() > 1e-3


@pytest.mark.parametrize("ranker_name", ["self_judge", "likelihood"])
def test_self_rankers_show_the_picture_again(vlm, shapes, tmp_path, ranker_name):
    from dataclasses import replace

    from purld.ranking import LikelihoodRanker, SelfJudgeRanker
    from purld.ranking.base import RankingContext
    from purld.rollout.sampler import candidates_from_texts

    model, tokenizer, processor = vlm
    dm = datamodule(vlm, shapes, tmp_path)
    batch = dm.collate(dm.train_items[:2])
    candidates = candidates_from_texts(tokenizer, [["The answer is 2.", "red"], ["3", "The answer is blue."]], "cpu")
    ranker = SelfJudgeRanker() if ranker_name == "self_judge" else LikelihoodRanker()
    context = RankingContext(shapes, model, tokenizer, render=dm.render_message, processor=processor)
    scores = ranker(batch, candidates, context)
    other_pictures = replace(batch, examples=[replace(e, images=o.images) for e, o in zip(batch.examples, batch.examples[::-1])])
    assert scores.shape == (2, 2) and torch.isfinite(scores).all()
    assert not torch.allclose(ranker(other_pictures, candidates, context), scores)


def test_a_prompt_with_images_needs_a_processor(vlm, shapes):
    from purld.data.prompts import encode_prompts

    _, tokenizer, _ = vlm
    example = shapes.examples("train")[0]
    with pytest.raises(ValueError, match="no processor"):
        encode_prompts(tokenizer, None, ["<image>\n" + example.prompt], [example.images])


def test_the_anchor_cache_key_changes_with_the_picture(shapes):
    from dataclasses import replace

    from purld.anchors.cache import cache_key
    from purld.teachers import ReferenceTeacher

    first, second = shapes.examples("train")[:2]
    same_question = replace(second, prompt=first.prompt, prompt_id=first.prompt_id)
    assert cache_key(ReferenceTeacher(), first) != cache_key(ReferenceTeacher(), same_question)
    assert cache_key(ReferenceTeacher(), first) == cache_key(ReferenceTeacher(), replace(first, images=(first.images[0].copy(),)))


def test_lora_on_a_vlm_adapts_the_language_model_only(tmp_path, vlm):
    from purld.students import LoRAStudent

    model, tokenizer, processor = vlm
    model.save_pretrained(tmp_path / "vlm")
    tokenizer.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    student = LoRAStudent(str(tmp_path / "vlm"), r=2, gradient_checkpointing=False)
    lora, lora_tokenizer = student.load()
    adapted = [name for name, p in lora.named_parameters() if p.requires_grad]
    assert adapted and all("lora_" in name and "language_model" in name for name in adapted)
    assert student.load_processor(lora_tokenizer).tokenizer is lora_tokenizer
    full = type(student).__mro__[1](str(tmp_path / "vlm"), gradient_checkpointing=False)  # HFStudent
    frozen = [name for name, p in full.load()[0].named_parameters() if not p.requires_grad]
    assert frozen and all("vision_tower" in name for name in frozen)


@pytest.fixture(scope="module")
def qwen_vl():
    from purld.students import TinyQwenVLStudent

    student = TinyQwenVLStudent(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                vision_hidden_size=32, vision_layers=1, vision_heads=2, seed=0)
    model, tokenizer = student.load()
    # Weights 10x the init's scale: at 0.02 attention is near uniform and where a token sits barely moves the logits.
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        for weight in (p for p in model.parameters() if p.dim() > 1):
            weight.normal_(std=0.2)
    return model.eval(), tokenizer, student.load_processor(tokenizer)


def own_positions_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask, vision):
    """Each completion's log-probs with the positions transformers computes itself (no position_ids: a Qwen2-VL
    model places the image tokens from `mm_token_type_ids` and `image_grid_thw`)."""
    from purld.rollout.logprobs import token_logps_from_logits
    from purld.rollout.positions import multimodal_token_types

    K, T = completion_ids.shape[0] // prompt_ids.shape[0], completion_ids.shape[1]
    ids = torch.cat([prompt_ids.repeat_interleave(K, 0), completion_ids], 1)
    mask = torch.cat([prompt_mask.repeat_interleave(K, 0), completion_mask], 1).long()
    token_types = multimodal_token_types(model, ids)
    token_types[:, prompt_ids.shape[1] :] = 0  # generated tokens are text, as `generate` places them
    model.model.rope_deltas = None  # nothing left from an earlier call
    logits = model(input_ids=ids, attention_mask=mask, mm_token_type_ids=token_types,
                   **stack_vision_inputs(vision, repeats=K)).logits[:, -(T + 1) : -1]
    return token_logps_from_logits(logits, completion_ids)


def test_a_multimodal_rope_student_reads_every_token_at_the_place_transformers_gives_it(qwen_vl, shapes, tmp_path):
    """Qwen2.5-VL's image tokens sit on a 2 × 2 grid and the question after them continues from the grid's
    largest position: the rollout's log-probs, the shared-prompt and the repeated-prompt training forwards all
    equal the model's own forward, which computes those positions itself."""
    from purld.rollout.logprobs import completion_token_logps
    from unittest.mock import patch

    from purld.rollout.positions import position_ids, text_positions
    from purld.rollout.sampler import Sampler, candidates_from_texts

    model, tokenizer, _ = qwen_vl
    dm = datamodule(qwen_vl, shapes, tmp_path)
    batch = dm.collate(dm.train_items[:2])
    positions, deltas = position_ids(model, batch.prompt_ids, batch.prompt_mask, stack_vision_inputs(batch.vision_inputs))
    assert positions.shape == (3, *batch.prompt_ids.shape) and (deltas < 0).all()  # 4 image tokens on 2 × 2 places
    torch.manual_seed(0)
    rollout = Sampler(num_candidates=3, max_new_tokens=8).sample(model, tokenizer, batch)
    texts = candidates_from_texts(tokenizer, [["The answer is 2.", "red", "3"], ["I see", "blue", "4"]], "cpu")
    for candidates in (rollout, texts):
        ids, mask = candidates.completion_ids.flatten(0, 1), candidates.completion_mask.flatten(0, 1)
        own = own_positions_logps(model, batch.prompt_ids, batch.prompt_mask, ids, mask, batch.vision_inputs)
        shared = completion_token_logps(model, batch.prompt_ids, batch.prompt_mask, ids, mask, vision=batch.vision_inputs)
        repeated = completion_token_logps(model, batch.prompt_ids.repeat_interleave(3, 0), batch.prompt_mask.repeat_interleave(3, 0),
                                          ids, mask, vision=tuple(v for v in batch.vision_inputs for _ in range(3)))
        assert (shared - own).abs()[mask].max() < 1e-4 and (repeated - own).abs()[mask].max() < 1e-4
        if candidates is rollout:
            assert (rollout.sampling_token_logps.flatten(0, 1) - own).abs()[mask].max() < 1e-4
    # Where the places matter: 1-D positions from the mask (what every stage gave before) read other numbers.
    with patch("purld.rollout.logprobs.position_ids", lambda model, ids, mask, *args, **kwargs: (text_positions(mask), None)):
        one_dimensional = completion_token_logps(model, batch.prompt_ids.repeat_interleave(3, 0),
                                                 batch.prompt_mask.repeat_interleave(3, 0), ids, mask,
                                                 vision=tuple(v for v in batch.vision_inputs for _ in range(3)))
    assert (one_dimensional - own).abs()[mask].max() > 1e-2


def test_student_hf_loads_a_qwen2_5_vl_with_adapters_on_its_language_model_only(tmp_path, qwen_vl):
    import importlib.util

    from purld.students import HFStudent, LoRAStudent

    model, tokenizer, processor = qwen_vl
    model.save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    processor.save_pretrained(tmp_path / "qwen")
    lora, _ = LoRAStudent(str(tmp_path / "qwen"), r=2, gradient_checkpointing=False).load()
    adapted = [name for name, p in lora.named_parameters() if p.requires_grad]
    assert adapted and all("lora_" in name and "language_model" in name for name in adapted)
    full = HFStudent(str(tmp_path / "qwen"), gradient_checkpointing=False)
    frozen = [name for name, p in full.load()[0].named_parameters() if not p.requires_grad]
    assert frozen and all(".visual." in name for name in frozen)
    if importlib.util.find_spec("torchvision") is None:  # transformers cannot build its processor: said, not a tokenizer
        with pytest.raises(ValueError, match=r"qwen holds an image-text-to-text model.*reads no images.*torchvision is not installed"):
            full.load_processor(tokenizer)
