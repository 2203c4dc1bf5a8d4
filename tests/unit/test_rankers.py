from pathlib import Path

import pytest
import torch

from purld.ranking import (
    EmbeddingRanker,
    LexicalRanker,
    LikelihoodRanker,
    OracleRanker,
    RandomRanker,
    RankingContext,
    SelfJudgeRanker,
    VerifierRanker,
)
from purld.ranking.lexical import rouge_l
from purld.rollout.sampler import candidates_from_texts


def test_rouge_l_by_hand():
    """LCS("abc", "abd") = 2 ⇒ precision = recall = 2/3 ⇒ F1 = 2/3."""
    assert rouge_l(list("abc"), list("abd")) == pytest.approx(2 / 3)
    assert rouge_l(list("abc"), list("abc")) == 1.0
    assert rouge_l([], list("abc")) == 0.0


@pytest.fixture
def scored(student, task, make_batch, tmp_path):
    model, tokenizer = student
    batch = make_batch(task, tmp_path, size=2)
    texts = [
        [batch.anchors[0], "1+2=3 ans=7", "junk", batch.anchors[0][:-1] + "0"],
        [batch.anchors[1], "", "ans=" + str(batch.examples[1].answer), "9+9=18 ans=18"],
    ]
    candidates = candidates_from_texts(tokenizer, texts, "cpu")
    context = RankingContext(task=task, model=model, tokenizer=tokenizer)
    return batch, candidates, context, texts


ALL_RANKERS = [LexicalRanker(), LexicalRanker(unit="word"), VerifierRanker(), OracleRanker(baseline=True),
               LikelihoodRanker(), SelfJudgeRanker(), EmbeddingRanker()]


@pytest.mark.parametrize("ranker", ALL_RANKERS, ids=lambda r: f"{r.name}")
def test_shape_and_permutation_equivariance(ranker, scored, student):
    """Permuting candidates permutes their scores (batched scoring has no position effects)."""
    batch, candidates, context, texts = scored
    scores = ranker(batch, candidates, context)
    assert scores.shape == (2, 4) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    order = [2, 0, 3, 1]
    permuted = candidates_from_texts(student[1], [[row[i] for i in order] for row in texts], "cpu")
    assert torch.allclose(ranker(batch, permuted, context), scores[:, order], atol=1e-5)


def test_lexical_prefers_the_anchor(scored):
    batch, candidates, context, _ = scored
    scores = LexicalRanker()(batch, candidates, context)
    assert scores[0, 0] == 1.0 and scores[0, 0] > scores[0, 3] > scores[0, 2]


def test_verifier_compares_final_answers_with_the_anchor(scored):
    batch, candidates, context, _ = scored
    assert VerifierRanker()(batch, candidates, context).tolist() == [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]


def test_oracle_is_graded(scored):
    batch, candidates, context, _ = scored
    scores = OracleRanker(baseline=True)(batch, candidates, context)
    assert scores[0, 0] == 1.0 and 0.0 < scores[0, 3] < 1.0 and scores[0, 2] == 0.0


def test_likelihood_batched_equals_one_by_one(scored):
    """Padding to the batch's longest candidate must not change any candidate's PMI."""
    batch, candidates, context, texts = scored
    together = LikelihoodRanker()(batch, candidates, context)
    for b in range(2):
        for k in range(4):
            alone = candidates_from_texts(context.tokenizer, [[texts[b][k]]], "cpu")
            sub_batch = type(batch)(
                examples=batch.examples[b : b + 1], anchors=batch.anchors[b : b + 1],
                prompt_ids=batch.prompt_ids[b : b + 1], prompt_mask=batch.prompt_mask[b : b + 1],
                anchor_ids=batch.anchor_ids[b : b + 1], anchor_mask=batch.anchor_mask[b : b + 1],
            )
            assert LikelihoodRanker()(sub_batch, alone, context).item() == pytest.approx(together[b, k].item(), abs=1e-4)


def test_random_ranker_is_seeded(scored):
    batch, candidates, context, _ = scored
    assert torch.equal(RandomRanker(seed=3)(batch, candidates, context), RandomRanker(seed=3)(batch, candidates, context))


def test_self_rankers_leave_training_mode_alone(scored):
    batch, candidates, context, _ = scored
    context.model.train()
    SelfJudgeRanker()(batch, candidates, context)
    LikelihoodRanker()(batch, candidates, context)
    assert context.model.training


def test_embedding_works_offline_and_prefers_the_anchor(scored, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    batch, candidates, context, _ = scored
    scores = EmbeddingRanker()(batch, candidates, context)
    assert scores[0, 0].item() == pytest.approx(1.0, abs=1e-4)  # the anchor itself
    assert (scores[:, 0:1] >= scores[:, 1:] - 1e-5).all()


def test_self_judge_with_a_shared_prefix_scores_the_whole_judge_prompt():
    """The KV-shared judge (each prompt's instruction, question and anchor read once for its candidates) equals one
    forward pass over each full judge prompt (char tokenizer: same tokens)."""
    from purld.ranking.base import RankingContext
    from purld.data.prompts import encode_prompts
    from purld.ranking.self_judge import DEFAULT_TEMPLATE, SelfJudgeRanker
    from purld.rollout.sampler import candidates_from_texts
    from purld.students.tiny import TinyLlamaStudent
    from purld.types import Example, PromptBatch

    model, tokenizer = TinyLlamaStudent(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).load()
    model.eval()
    examples = [Example(prompt_id="a", prompt="12+5=", reference="17"), Example(prompt_id="b", prompt="999+1=", reference="1000"),
                Example(prompt_id="c", prompt="3+4=", reference="7")]
    texts = [["17", "18 is it"], ["1000", "no idea"], ["7", "seven"]]
    empty = torch.zeros(3, 1, dtype=torch.long)
    batch = PromptBatch(examples=examples, anchors=["17", "1000", "7"], prompt_ids=empty, prompt_mask=empty.bool(), anchor_ids=empty, anchor_mask=empty.bool())
    ranker = SelfJudgeRanker()
    with torch.no_grad():
        scores = ranker.score(batch, candidates_from_texts(tokenizer, texts, "cpu"), RankingContext(task=None, model=model, tokenizer=tokenizer))
        prompts = [DEFAULT_TEMPLATE.format(prompt=e.prompt, anchor=e.reference, candidate=t) for e, row in zip(examples, texts) for t in row]
        ids, mask, _ = encode_prompts(tokenizer, None, prompts, device="cpu")
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        logps = model(input_ids=ids, attention_mask=mask.long(), position_ids=positions, logits_to_keep=1).logits[:, -1].float().log_softmax(-1)
    yes, no = ranker._first_token_id(tokenizer, "Yes"), ranker._first_token_id(tokenizer, "No")
    assert torch.allclose(scores.flatten(), logps[:, yes] - logps[:, no], atol=1e-5)


def test_self_judge_config_holds_the_default_template():
    from omegaconf import OmegaConf

    from purld.ranking.self_judge import DEFAULT_TEMPLATE

    assert OmegaConf.load(Path(__file__).parents[2] / "conf" / "ranker" / "self_judge.yaml").template == DEFAULT_TEMPLATE


def test_likelihood_under_another_judge_ignores_the_samplers_log_probs(scored):
    """With `judge_model=reference` the sampler's recorded log-probs come from another model: never reused."""
    import dataclasses

    from purld.types import Rollout

    batch, candidates, context, _ = scored
    exact = LikelihoodRanker()(batch, candidates, context)  # plain Candidates: both terms computed
    wrong_logps = Rollout(**{f.name: getattr(candidates, f.name) for f in dataclasses.fields(candidates)},
                          sampling_token_logps=torch.zeros(candidates.completion_ids.shape), is_truncated=torch.zeros(2, 4, dtype=torch.bool),
                          sampling_temperature=1.0)
    judge = dataclasses.replace(context, model_is_sampler=False)
    assert torch.allclose(LikelihoodRanker(judge_model="reference")(batch, wrong_logps, judge), exact, atol=1e-5)
    assert not torch.allclose(LikelihoodRanker()(batch, wrong_logps, context), exact, atol=1e-3)  # reused, as it should when sampled


def test_judge_model_is_checked():
    with pytest.raises(ValueError, match="ranker.judge_model"):
        LikelihoodRanker(judge_model="teacher")
    with pytest.raises(ValueError, match="ranker.judge_model"):
        SelfJudgeRanker(judge_model="student")
