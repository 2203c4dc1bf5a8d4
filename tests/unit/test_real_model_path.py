"""What only a pretrained checkpoint shows: train/eval mode, its generation config, its chat template, devices.

Most tests run the real student (SmolLM2-135M-Instruct, the `smollm2` fixture); the ones that need a checkpoint
setting SmolLM2 does not have (dropout, a repetition penalty, several EOS ids) save a tiny Llama with it.
"""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from purld.anchors import AnchorCache
from purld.data import AnchorDataModule
from purld.modules import GroupModule
from purld.objectives import GRPOObjective
from purld.preferences import GroupTargetBuilder
from purld.ranking import LikelihoodRanker, SelfJudgeRanker, VerifierRanker
from purld.rollout import Sampler, completion_token_logps
from purld.rollout.sampler import completion_mask_from_ids, stop_token_ids
from purld.students import HFStudent
from purld.tasks import WordProblemsTask
from purld.teachers import ReferenceTeacher
from tests.unit.test_hf_students import save_tiny

TASK = WordProblemsTask(num_train=8, num_heldout=4)


def datamodule(tokenizer, tmp_path, batch_size=2) -> AnchorDataModule:
    dm = AnchorDataModule(
        TASK, ReferenceTeacher(), AnchorCache(tmp_path / "anchors.sqlite"), tokenizer,
        batch_size=batch_size, use_chat_template=True, progress=False,
    )
    dm.prepare_data()
    dm.setup()
    return dm


def record_forwards(layer: torch.nn.Module) -> list[tuple[bool, bool]]:
    """(grad enabled, layer in training mode) at each call of `layer`."""
    calls: list[tuple[bool, bool]] = []
    layer.register_forward_pre_hook(lambda module, args: calls.append((torch.is_grad_enabled(), module.training)))
    return calls


def grad_enabled_layer_calls(smollm2_dir, tmp_path, checkpointing) -> list[bool]:
    """Whether the first decoder layer's MLP was in training mode at each call with grad enabled, over one GRPO step."""
    model, tokenizer = HFStudent(smollm2_dir, gradient_checkpointing=checkpointing).load()
    assert not model.training  # as transformers hands it over
    calls = record_forwards(model.model.layers[0].mlp)  # inside the layer: its recomputation calls it again
    module = GroupModule(
        model, tokenizer, GRPOObjective(beta=0.0, preferences=GroupTargetBuilder()),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.0), sampler=Sampler(num_candidates=2, max_new_tokens=3),
        task=TASK, ranker=VerifierRanker(),
    )
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    # Batches alone, no datamodule: the module owns its task and ranker and reads nothing back through the trainer.
    trainer.fit(module, train_dataloaders=datamodule(tokenizer, tmp_path / str(checkpointing), batch_size=1).train_dataloader())
    return [training for grad, training in calls if grad]


def test_a_loaded_student_trains_in_training_mode_with_its_checkpointing(smollm2_dir, tmp_path):
    """from_pretrained gives an eval-mode model and Lightning keeps it so: checkpointing would never run."""
    plain = grad_enabled_layer_calls(smollm2_dir, tmp_path, False)
    checkpointed = grad_enabled_layer_calls(smollm2_dir, tmp_path, "full")
    assert plain and all(plain) and all(checkpointed)  # the update's forward (and its recomputation) in training mode
    assert len(checkpointed) == 2 * len(plain)  # backward re-ran every call of the layer: checkpointing was active


def test_dropout_is_off_in_the_policy(tmp_path):
    directory = save_tiny(tmp_path, "llama")
    config = directory / "config.json"
    config.write_text(config.read_text().replace('"attention_dropout": 0.0', '"attention_dropout": 0.3'))
    model, _ = HFStudent(str(directory)).load()
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in model.model.layers)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_sampling_log_probs_ignore_the_checkpoints_generation_config(task, make_batch, tmp_path):
    """A repetition penalty and an n-gram ban in generation_config.json change what generate samples from; the
    recorded log-probs must still be the policy's (what the training forward pass computes)."""
    directory = save_tiny(tmp_path / "model", "llama")
    (directory / "generation_config.json").write_text(
        '{"repetition_penalty": 3.0, "no_repeat_ngram_size": 1, "min_p": 0.2, "top_k": 5, "eos_token_id": 2, "pad_token_id": 0}'
    )
    model, tokenizer = HFStudent(str(directory)).load()
    assert model.generation_config.repetition_penalty == 3.0
    batch = make_batch(task, tmp_path, size=3)
    rollout = Sampler(num_candidates=4, max_new_tokens=12, temperature=1.0).sample(model, tokenizer, batch)
    B, K, T = rollout.completion_ids.shape
    forward = completion_token_logps(
        model, batch.prompt_ids, batch.prompt_mask, rollout.completion_ids.reshape(B * K, T), rollout.completion_mask.reshape(B * K, T),
    ).reshape(B, K, T)
    assert (forward - rollout.sampling_token_logps).masked_fill(~rollout.completion_mask, 0).abs().max() < 1e-4
    assert model.generation_config.repetition_penalty == 3.0  # the checkpoint's own config is put back


def test_every_eos_id_of_the_checkpoint_ends_a_completion(tmp_path):
    directory = save_tiny(tmp_path, "llama")
    (directory / "generation_config.json").write_text('{"eos_token_id": [2, 7], "pad_token_id": 0}')
    model, tokenizer = HFStudent(str(directory)).load()
    assert stop_token_ids(model, tokenizer) == [2, 7]
    mask, truncated = completion_mask_from_ids(torch.tensor([[5, 7, 9, 9], [5, 2, 7, 9], [5, 5, 5, 5]]), [2, 7])
    assert mask.tolist() == [[True, True, False, False], [True, True, False, False], [True] * 4]
    assert truncated.tolist() == [False, False, True]


def test_rankers_read_what_the_student_reads(smollm2, tmp_path):
    """Through the chat template: the rollout's prompt for ℓ(y|x), and one user turn for x ⊕ a and the judge."""
    model, tokenizer = smollm2
    dm = datamodule(tokenizer, tmp_path)
    batch = dm.collate(dm.train_items[:2])
    rollout = Sampler(num_candidates=2, max_new_tokens=4, temperature=0.7).sample(model, tokenizer, batch)
    inputs: list[str] = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: inputs.extend(tokenizer.batch_decode(kwargs["input_ids"])), with_kwargs=True
    )
    try:
        for ranker in (LikelihoodRanker(), SelfJudgeRanker()):
            module = GroupModule(model, tokenizer, GRPOObjective(preferences=GroupTargetBuilder()), optimizer=None,
                                 task=TASK, ranker=ranker, render=dm.render_message)
            inputs.clear()
            scores = module.rank(batch, rollout)
            assert scores.shape == (2, 2) and torch.isfinite(scores).all()
            text = "".join(inputs)
            assert text.count("<|im_start|>assistant") >= 2, (ranker.name, text)  # every context ends with the cue
            assert "<|im_start|>user\nYou are grading" in text or ranker.name == "likelihood"
            assert "<|im_start|>user\nReference:" in text or ranker.name == "self_judge"
    finally:
        hook.remove()


def test_self_judge_template_reads_well_for_prompts_with_their_own_labels(smollm2):
    _, tokenizer = smollm2
    from purld.ranking.self_judge import DEFAULT_TEMPLATE

    gsm8k_prompt = "Question: Tom has 3 apples. How many?\nAnswer:"
    judged = DEFAULT_TEMPLATE.format(prompt=gsm8k_prompt, anchor="3", candidate="3")
    assert judged.count("Question:") == 1


def test_evaluation_runs_on_the_trainers_device(monkeypatch):
    from purld.eval.evaluate import evaluation_device

    assert evaluation_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert evaluation_device("gpu") == torch.device("cuda", 0)
    assert evaluation_device("auto") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="trainer.accelerator=gpu"):
        evaluation_device("gpu")


def test_evaluate_moves_the_model_to_the_device_it_is_given(student, task, tmp_path, make_batch):
    """Lightning's teardown leaves a fitted module on the CPU; `evaluate` must not read the device off the model."""
    from purld.eval.evaluate import evaluate
    from purld.ranking import LexicalRanker

    model, tokenizer = student
    moved_to: list = []
    spy = copy.deepcopy(model)
    original = spy.to
    spy.to = lambda *args, **kwargs: (moved_to.append(args[0] if args else kwargs.get("device")), original(*args, **kwargs))[1]
    batch = make_batch(task, tmp_path, size=2)
    evaluate(spy, tokenizer, [batch], task, LexicalRanker(), max_new_tokens=4, device="cpu")
    assert moved_to == ["cpu"]


def test_under_ddp_each_rank_validates_its_share_of_the_held_out_prompts(smollm2, tmp_path):
    """Before: every rank ran the whole held-out set (world_size times the work, the same numbers)."""
    _, tokenizer = smollm2
    dm = datamodule(tokenizer, tmp_path)
    shares = []
    for rank in range(2):
        dm.trainer = type("Trainer", (), {"global_rank": rank, "world_size": 2})()
        shares.append([e.prompt_id for batch in dm.val_dataloader() for e in batch.examples])
    everything = [example.prompt_id for example, _ in dm.heldout_items]
    assert len(everything) == 4 and sorted(shares[0] + shares[1]) == sorted(everything)
    assert not set(shares[0]) & set(shares[1])
