"""The stacked LoRA (per-row and per-token adapters) and the batch decoder give PEFT's and ``generate``'s numbers."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from playground import config
from playground.engine.decoding import DecodeRequest
from playground.engine.generation import _eos_ids, generate, stream_generate
from playground.engine.multi_lora import StackedLora, per_row_adapters
from playground.engine.packed import packed_sequence_logps
from playground.engine.scoring import score
from playground.engine.templating import prompt_ids, tokenize_pair
from tests.conftest import save_random_adapter

ROWS = [config.PEFT_BASE_ADAPTER, "dpo", "kto", "dpo"]


def _logits(model, ids, **kwargs):
    with torch.inference_mode():
        return model(input_ids=ids, **kwargs).logits


def test_stacked_rows_equal_peft_mixed_batch(tiny_engine):
    model = tiny_engine.model
    ids = torch.randint(0, 2000, (len(ROWS), 9), generator=torch.Generator().manual_seed(0))
    expected = _logits(model, ids, adapter_names=ROWS)
    stacked = StackedLora.of(model)
    assert stacked is not None and stacked.slot_of == {"dpo": 1, "kto": 2}
    assert stacked.slots_for(ROWS).tolist() == [0, 1, 2, 1]
    with stacked.applied(stacked.slots_for(ROWS).unsqueeze(1)):
        got = _logits(model, ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the base row is exactly the base: PEFT's adapters are off inside the block, and slot 0 owns no column
    with model.disable_adapter():
        torch.testing.assert_close(got[0], _logits(model, ids)[0], atol=0, rtol=0)  # same batch, same kernels
    # the hooks are gone afterwards: the model is PEFT's again
    torch.testing.assert_close(_logits(model, ids, adapter_names=ROWS), expected, atol=0, rtol=0)
    assert not any(m._forward_hooks for m in model.modules())


def test_per_token_adapters_in_one_packed_row_equal_per_adapter_scores(tiny_engine, tokenizer):
    model = tiny_engine.model
    texts = [("Say hi.", "Hi there!"), ("Say hi.", "Hello, friend."), ("Name a colour.", "Blue, like the sea.")]
    names = [config.PEFT_BASE_ADAPTER, "dpo", "kto"]
    sequences, adapters, prompts, responses = [], [], [], []
    for name in names:
        for prompt, response in texts:
            sequences.append(tokenize_pair(tokenizer, prompt, response))
            adapters.append(name)
            prompts.append(prompt)
            responses.append(response)
    with torch.inference_mode():
        sums, lengths = packed_sequence_logps(model, sequences, tokenizer.pad_token_id, adapter_names=adapters)
    expected = score(model, tokenizer, prompts, responses, adapter=adapters)  # padded rows, stacked per row
    torch.testing.assert_close(sums, expected.sum_logps, atol=1e-4, rtol=1e-5)
    assert lengths.tolist() == expected.lengths.tolist()
    # and each adapter alone through PEFT's own active-adapter path
    for name in ("dpo", "kto"):
        model.set_adapter(name)
        alone = score(model, tokenizer, prompts[:3], responses[:3])
        torch.testing.assert_close(sums[names.index(name) * 3: names.index(name) * 3 + 3], alone.sum_logps,
                                   atol=1e-4, rtol=1e-5)
    assert not torch.allclose(sums[:3], sums[3:6])  # the adapters do change the scores


def test_adapters_of_different_ranks_and_targets_stack(tokenizer, tiny_model_factory, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = tiny_model_factory(0)
    save_random_adapter(base, tmp_path / "wide", seed=3, r=8)
    torch.manual_seed(4)
    narrow = get_peft_model(tiny_model_factory(0), LoraConfig(r=2, lora_alpha=7, target_modules=["q_proj", "v_proj"],
                                                             init_lora_weights=False))
    narrow.save_pretrained(str(tmp_path / "narrow"))
    model = PeftModel.from_pretrained(tiny_model_factory(0), str(tmp_path / "wide"), adapter_name="wide")
    model.load_adapter(str(tmp_path / "narrow"), adapter_name="narrow")
    model.eval()
    rows = ["narrow", config.PEFT_BASE_ADAPTER, "wide"]
    ids = torch.randint(0, 2000, (3, 6), generator=torch.Generator().manual_seed(1))
    expected = _logits(model, ids, adapter_names=rows)
    with per_row_adapters(model, rows) as (selection, kwargs):
        assert selection is not None and kwargs == {}
        got = _logits(model, ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_unstackable_adapters_fall_back_to_peft(tokenizer, tiny_model_factory, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    model = get_peft_model(tiny_model_factory(0), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True,
                                                            init_lora_weights=False)).eval()
    assert StackedLora.of(model) is None
    with per_row_adapters(model, ["default", config.PEFT_BASE_ADAPTER]) as (selection, kwargs):
        assert selection is None and kwargs == {"adapter_names": ["default", config.PEFT_BASE_ADAPTER]}


def test_stacks_are_rebuilt_when_adapters_change(tiny_engine, tokenizer, tiny_model_factory, tmp_path):
    first = StackedLora.of(tiny_engine.model)
    assert StackedLora.of(tiny_engine.model) is first  # cached while nothing changes
    tiny_engine.detach("dpo")
    second = StackedLora.of(tiny_engine.model)
    assert second is not first and second.slot_of == {"kto": 1}


# --------------------------------------------------------------------------------------------------------------------
# The batch decoder against transformers' generate


def _hf_generate(engine, prompt, names, settings):
    ids = prompt_ids(engine.tokenizer, prompt)
    input_ids = torch.tensor([ids] * len(names))
    kwargs = dict(max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                  pad_token_id=engine.tokenizer.pad_token_id, eos_token_id=_eos_ids(engine, engine.tokenizer))
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        torch.manual_seed(settings.seed)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        out = engine.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    adapter_names=names, **kwargs)
    eos = set(_eos_ids(engine, engine.tokenizer))
    rows = []
    for row in out[:, len(ids):].tolist():
        rows.append(row[: next((i for i, t in enumerate(row) if t in eos), len(row))])
    return rows


@pytest.mark.parametrize("settings", [
    config.GenerationConfig(max_new_tokens=14, do_sample=False),
    config.GenerationConfig(max_new_tokens=14, do_sample=True, temperature=0.8, top_p=0.9, seed=11),
    config.GenerationConfig(max_new_tokens=14, do_sample=True, temperature=1.0, top_p=1.0, seed=3),
], ids=["greedy", "sampled", "sampled-plain"])
def test_decoder_matches_generate(tiny_engine, settings):
    variants = ["base", "dpo", "kto"]
    expected = _hf_generate(tiny_engine, "Tell me a story.", tiny_engine.adapter_names_for(variants), settings)
    got = generate(tiny_engine, "Tell me a story.", variants, settings)
    assert [got[v].token_ids for v in variants] == expected


def test_requests_that_arrive_together_share_one_batch_and_keep_their_own_answers(tiny_engine):
    greedy = config.GenerationConfig(max_new_tokens=10, do_sample=False)
    sampled = config.GenerationConfig(max_new_tokens=6, do_sample=True, temperature=0.9, top_p=0.95, seed=21)
    asks = [("Tell me a story.", ["base", "dpo", "kto"], greedy),
            ("Hi", ["kto", "base"], sampled),
            ("Name three rivers of Europe, please.", ["dpo"], greedy),
            ("Hi", ["base"], config.GenerationConfig(max_new_tokens=3, do_sample=False))]
    alone = [generate(tiny_engine, p, v, s) for p, v, s in asks]
    decoder = tiny_engine.decoder
    batches_before = decoder.batches
    results: list = [None] * len(asks)

    def ask(i):
        results[i] = generate(tiny_engine, *asks[i])

    with tiny_engine.lock:  # the decoder waits for the lock: every request is queued before the batch starts
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # templating and submitting take milliseconds
    for thread in threads:
        thread.join(timeout=60)
    assert decoder.batches - batches_before <= 2  # the first may have started alone; the rest joined one batch
    assert decoder.largest_batch_rows >= 4
    for together, single in zip(results, alone):
        assert {k: v.token_ids for k, v in together.items()} == {k: v.token_ids for k, v in single.items()}
    assert len(results[3]["base"].token_ids) <= 3 and len(results[0]["base"].token_ids) > 3


def test_stop_ends_one_request_and_not_the_others(tiny_engine):
    long = config.GenerationConfig(max_new_tokens=40, do_sample=False)
    cancel = threading.Event()
    stream = stream_generate(tiny_engine, "Tell me a story.", ["base", "dpo"], long, cancel=cancel)
    other: dict = {}
    thread = threading.Thread(target=lambda: other.update(generate(tiny_engine, "Hello", ["kto"], long)))
    first = next(stream)
    thread.start()
    cancel.set()
    states = list(stream)
    thread.join(timeout=60)
    assert states[-1].done
    assert max(len(o.token_ids) for o in states[-1].outputs.values()) <= len(first.outputs["base"].token_ids) + 2
    assert other["kto"].token_ids == generate(tiny_engine, "Hello", ["kto"], long)["kto"].token_ids


def test_a_request_cancelled_while_waiting_never_runs(tiny_engine):
    request = DecodeRequest(prompt_ids(tiny_engine.tokenizer, "Hi"), [config.PEFT_BASE_ADAPTER],
                            config.GenerationConfig(max_new_tokens=5), [2], emit=lambda step: steps.append(step))
    steps: list = []
    with tiny_engine.lock:
        tiny_engine.decoder.submit(request)
        request.cancel.set()
    assert request.finished.wait(30) and steps == [] and request.error is None


@pytest.mark.parametrize("joiner", ["Hi", "Name three rivers of Europe and say which is the longest, please."],
                         ids=["shorter-prompt", "longer-prompt"])
def test_a_request_arriving_mid_batch_joins_it_at_a_step_and_keeps_its_answer(tiny_engine, joiner):
    long = config.GenerationConfig(max_new_tokens=40, do_sample=False)
    sampled = config.GenerationConfig(max_new_tokens=12, do_sample=True, temperature=0.9, top_p=0.9, seed=5)
    first_alone = generate(tiny_engine, "Tell me a story.", ["base", "dpo"], long)
    joiner_alone = generate(tiny_engine, joiner, ["kto", "base"], sampled)
    decoder = tiny_engine.decoder
    batches, joined = decoder.batches, decoder.joined
    stream = stream_generate(tiny_engine, "Tell me a story.", ["base", "dpo"], long)
    next(stream)  # the batch is running
    late: dict = {}
    thread = threading.Thread(target=lambda: late.update(generate(tiny_engine, joiner, ["kto", "base"], sampled)))
    thread.start()
    states = list(stream)
    thread.join(timeout=60)
    assert decoder.joined == joined + 1 and decoder.batches == batches + 1  # it joined; no second batch
    assert {k: v.token_ids for k, v in states[-1].outputs.items()} == {k: v.token_ids for k, v in first_alone.items()}
    assert {k: v.token_ids for k, v in late.items()} == {k: v.token_ids for k, v in joiner_alone.items()}


def test_closing_the_decoder_ends_its_thread_and_a_later_request_starts_a_new_one(tiny_engine):
    greedy = config.GenerationConfig(max_new_tokens=3, do_sample=False)
    first = generate(tiny_engine, "Hi", ["base"], greedy)
    thread = tiny_engine.decoder._thread
    tiny_engine.decoder.close()
    assert not thread.is_alive()
    assert generate(tiny_engine, "Hi", ["base"], greedy)["base"].token_ids == first["base"].token_ids
