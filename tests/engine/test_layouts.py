"""Literal token layouts, written out as TRL's tests write them: the chat-template split of the real tokenizer, the
padded batch of ``collate``, and the padding-free row of the packed planner (ids, positions, attention segments,
which hidden state predicts which token)."""

from __future__ import annotations

import torch

from playground.engine.packed import _buckets, _group_by_prompt, _make_plan, plan_packed_row
from playground.engine.scoring import collate
from playground.engine.templating import TokenizedPair, tokenize_pair

# SmolLM2's template with its default system prompt, for the prompt "Hi?" (decoded: <|im_start|>system\nYou are a
# helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n
# <|im_start|>assistant\n)
HI_PROMPT = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182,
             2, 198, 1, 4093, 198, 26843, 47, 2, 198, 1, 520, 9531, 198]
HELLO = [19556, 17, 2, 198]  # "Hello", "!", <|im_end|>, "\n": the end of turn belongs to the response


def test_tokenize_pair_splits_at_the_generation_prompt(tokenizer):
    pair = tokenize_pair(tokenizer, "Hi?", "Hello!")
    assert pair.prompt_ids == HI_PROMPT and pair.response_ids == HELLO and not pair.truncated


def test_tokenize_pair_with_a_system_prompt(tokenizer):
    pair = tokenize_pair(tokenizer, "Hi?", "Hello!", system="Be brief.")
    # <|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n
    assert pair.prompt_ids == [1, 9690, 198, 6077, 5453, 30, 2, 198, 1, 4093, 198, 26843, 47, 2, 198, 1, 520, 9531, 198]
    assert pair.response_ids == HELLO


def test_tokenize_pair_truncates_the_prompt_start_then_the_response_end(tokenizer):
    pair = tokenize_pair(tokenizer, "Hi?", "Hello there, how are you today?", max_length=12)
    assert pair.prompt_ids == [2, 198, 1, 520, 9531, 198]  # the last half of the budget of the prompt
    assert pair.response_ids == [19556, 665, 28, 638, 359, 346]  # "Hello there, how are you"
    assert pair.truncated


PAIRS = [TokenizedPair([5, 6, 7], [8, 9]), TokenizedPair([5, 6], [10])]


def test_collate_right_padding():
    batch = collate(PAIRS, pad_token_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9],
                                        [5, 6, 10, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1],
                                             [1, 1, 1, 0, 0]]
    assert batch.response_mask.tolist() == [[False, False, False, True, True],
                                            [False, False, True, False, False]]


def test_collate_left_padding():
    batch = collate(PAIRS, pad_token_id=0, padding_side="left")
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9],
                                        [0, 0, 5, 6, 10]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1],
                                             [0, 0, 1, 1, 1]]
    assert batch.response_mask.tolist() == [[False, False, False, True, True],
                                            [False, False, False, False, True]]


# Three sequences: two answers to the prompt [1, 2, 3] and one to [1, 4].
SEQUENCES = [TokenizedPair([1, 2, 3], [10, 11]), TokenizedPair([1, 4], [20, 21, 22]),
             TokenizedPair([1, 2, 3], [30])]


def test_group_by_prompt_keeps_first_appearance_order_and_the_token_cap():
    assert _group_by_prompt(SEQUENCES, max_group_tokens=100) == [([1, 2, 3], [0, 2]), ([1, 4], [1])]
    # a cap of 5 tokens: [1, 2, 3] + [10, 11] fills it, so the third sequence opens a new group
    assert _group_by_prompt(SEQUENCES, max_group_tokens=5) == [([1, 2, 3], [0]), ([1, 4], [1]), ([1, 2, 3], [2])]


def test_packed_row_layout():
    row = plan_packed_row(SEQUENCES, _group_by_prompt(SEQUENCES, max_group_tokens=100))
    #                index: 0  1  2  3   4   5   6  7   8   9   10
    assert row.ids == [1, 2, 3, 10, 11, 30, 1, 4, 20, 21, 22]
    assert row.positions == [0, 1, 2, 3, 4, 3, 0, 1, 2, 3, 4]  # the second answer restarts after its prompt
    assert row.virtual == [[0, 1, 2, 3, 4], [0, 1, 2, 5], [6, 7, 8, 9, 10]]  # [prompt, answer] per sequence
    # each token's attention output: (virtual sequence, offset); the shared prompt's comes from the first answer's
    assert row.source == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3), (2, 4)]
    # the hidden state at each predictor index predicts the target: the prompt's last token the first answer token
    assert row.predictor == [2, 3, 2, 7, 8, 9]
    assert row.targets == [10, 11, 30, 20, 21, 22]
    assert row.owner == [0, 0, 2, 1, 1, 1]
    assert row.prompt_tokens_of == {(1, 2, 3): [0, 1, 2], (1, 4): [6, 7]}


def test_attention_buckets_and_plan():
    row = plan_packed_row(SEQUENCES, _group_by_prompt(SEQUENCES, max_group_tokens=100))
    # longest first; a new bucket once a length drops below 0.8 x the bucket's longest
    assert _buckets([10, 9, 7, 3]) == [[0, 1], [2], [3]]
    assert _buckets([len(v) for v in row.virtual]) == [[0, 2, 1]]  # lengths 5, 5, 4: one bucket
    plan = _make_plan(row.virtual, row.virtual, row.source, torch.device("cpu"))
    ((queries, keys),) = plan.buckets
    # sequence 1 is padded at its end with its first token (a causal query never attends to what follows it)
    assert queries.tolist() == keys.tolist() == [[0, 1, 2, 3, 4], [6, 7, 8, 9, 10], [0, 1, 2, 5, 0]]
    # each row token's output row in the bucket's (3 x 5) output: sequence 0 at 0..4, 2 at 5..9, 1 at 10..14
    assert plan.output_index.tolist() == [0, 1, 2, 3, 4, 13, 5, 6, 7, 8, 9]
