"""Words <-> CLIP token positions, for choosing which attention maps a method touches."""

from __future__ import annotations

import difflib
import re
from typing import Any

from ..requests import RequestError

_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*", re.UNICODE)
# Words that are never a subject of their own (for picking subjects automatically).
_FUNCTION = {
    "a", "an", "the", "and", "or", "of", "with", "in", "on", "at", "to", "by", "for", "from",
    "next", "near", "behind", "under", "over", "above", "below", "beside", "left", "right",
    "photo", "picture", "image", "painting", "drawing", "render", "is", "are", "it", "its",
    "very", "some", "two", "three", "one", "their", "his", "her", "this", "that",
}
_SEPARATORS = re.compile(r"\s*(?:,|;|\.|\band\b|\bwith\b|\bnext to\b|\bbeside\b|\bon\b|"
                         r"\bin\b|\bunder\b|\bover\b|\bbehind\b|\bnear\b)\s*", re.IGNORECASE)


def words(prompt: str) -> list[str]:
    return _WORD.findall(prompt.lower())


def prompt_tokens(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of the prompt, BOS and EOS included, no padding (truncated as the pipeline
    truncates, at the tokenizer's max length)."""
    return tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids


def word_positions(tokenizer: Any, prompt: str) -> list[tuple[str, list[int]]]:
    """Each word of the prompt with the positions of its tokens (BOS is position 0)."""
    out, position = [], 1
    limit = tokenizer.model_max_length - 1
    for word in words(prompt):
        count = len(tokenizer(word, add_special_tokens=False).input_ids)
        spots = [p for p in range(position, position + count) if p < limit]
        out.append((word, spots))
        position += count
    return out


def positions_of(tokenizer: Any, prompt: str, word: str) -> list[int]:
    """Token positions of every occurrence of `word` (case-insensitive; several words
    separated by spaces must appear in a row)."""
    wanted = words(word)
    listed = word_positions(tokenizer, prompt)
    found: list[int] = []
    for i in range(len(listed) - len(wanted) + 1):
        if [w for w, _ in listed[i:i + len(wanted)]] == wanted:
            for _, spots in listed[i:i + len(wanted)]:
                found += spots
    return found


def subject_words(prompt: str) -> list[str]:
    """Subjects picked automatically: the last content word of each phrase ("a red circle
    and a blue square" -> circle, square), which is the head noun in English phrases."""
    subjects = []
    for phrase in _SEPARATORS.split(prompt.lower()):
        content = [w for w in words(phrase) if w not in _FUNCTION]
        if content and content[-1] not in subjects:
            subjects.append(content[-1])
    return subjects


def refine_mapper(tokenizer: Any, source: str, edited: str, length: int
                  ) -> tuple[list[int], list[float]]:
    """For each token position of the edited prompt, the source position whose attention it
    takes, and 1.0 where it has one (0.0 for added words): prompt-to-prompt's refinement
    alignment, here with difflib's longest-matching-blocks alignment of the token ids."""
    a, b = prompt_tokens(tokenizer, source), prompt_tokens(tokenizer, edited)
    mapper, alphas = list(range(length)), [0.0] * length
    matcher = difflib.SequenceMatcher(None, a[1:-1], b[1:-1], autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            mapper[block.b + 1 + k], alphas[block.b + 1 + k] = block.a + 1 + k, 1.0
    mapper[0], alphas[0] = 0, 1.0
    # EOS and the padding after it keep the source's, shifted to line up
    for k, position in enumerate(range(len(b) - 1, length)):
        mapper[position], alphas[position] = min(len(a) - 1 + k, length - 1), 1.0
    return mapper, alphas


def check_same_length(tokenizer: Any, source: str, edited: str) -> None:
    """`replace` swaps words token for token: the two prompts need as many tokens."""
    a, b = prompt_tokens(tokenizer, source), prompt_tokens(tokenizer, edited)
    if len(a) == len(b):
        return
    sw, ew = words(source), words(edited)
    diff = [f"{' '.join(sw[i1:i2]) or '(nothing)'} -> {' '.join(ew[j1:j2]) or '(nothing)'}"
            for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, sw, ew).get_opcodes()
            if tag != "equal"]
    raise RequestError(
        f"mode 'replace' swaps words token for token, but the prompt has {len(a) - 2} tokens "
        f"and the edited prompt {len(b) - 2} (changed: {'; '.join(diff) or 'spacing'}). Swap "
        "words of the same token length, or use mode 'refine' to add or remove words.")
