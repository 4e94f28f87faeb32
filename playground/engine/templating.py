"""The prompt/response boundary: chat-template tokenisation of a (prompt, response) pair into its two parts.

Prompt tokens are the chat template of the prompt with the generation prompt added; response tokens are what the
templated prompt+response adds after them, the template's end-of-turn token included. Texts are tokenised with
``add_special_tokens=False`` because the template already writes BOS where the model wants one, so nothing is doubled.
"""

from __future__ import annotations

from dataclasses import dataclass

Prompt = str | list[dict[str, str]]


def prompt_text(prompt: Prompt) -> str:
    """A one-line rendering of a prompt for tables: the last user message of a chat (else its last message), or the
    text itself."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"] or [m["content"] for m in prompt]
    return users[-1] if users else ""


def build_messages(prompt: Prompt, system: str | None = None) -> list[dict[str, str]]:
    """Chat messages for ``prompt`` (plain text or a list of messages), with an optional system message first."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(message) for message in prompt]
    if system and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _template_ids(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer, prompt: Prompt, system: str | None = None) -> list[int]:
    """Token ids of the templated prompt, generation prompt included: what the model continues from."""
    return _template_ids(tokenizer, build_messages(prompt, system), add_generation_prompt=True)


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: list[int]
    response_ids: list[int]
    truncated: bool = False

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids


def tokenize_pair(tokenizer, prompt: Prompt, response: str, system: str | None = None,
                  max_length: int | None = None) -> TokenizedPair:
    """Split the templated conversation (prompt, response) into prompt tokens and response tokens.

    When prompt + response exceed ``max_length`` the response is cut at its end; a prompt longer than half the
    budget is cut from its start first, so some response always remains to be scored.
    """
    messages = build_messages(prompt, system)
    head = _template_ids(tokenizer, messages, add_generation_prompt=True)
    full = _template_ids(tokenizer, messages + [{"role": "assistant", "content": response}],
                         add_generation_prompt=False)
    if full[: len(head)] == head:
        tail = full[len(head):]
    else:  # a tokenizer that merges across the boundary: tokenise the added text on its own
        head_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}],
                                                  tokenize=False)
        tail = tokenizer(full_text[len(head_text):], add_special_tokens=False)["input_ids"]
    truncated = False
    if max_length is not None and len(head) + len(tail) > max_length:
        truncated = True
        if len(head) > max_length // 2:
            head = head[-max(max_length - len(tail), max_length // 2):]
        tail = tail[: max(max_length - len(head), 1)]
    return TokenizedPair(head, tail, truncated)
