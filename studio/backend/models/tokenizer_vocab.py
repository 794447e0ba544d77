"""Build a small CLIP BPE vocabulary offline (no Hub), for the built-in tiny and toy models.

CLIP's tokenizer is byte-level BPE. We keep every byte symbol (so any text tokenizes) and add
merges that make a list of words single tokens. The files written are the same `vocab.json` +
`merges.txt` a real CLIP tokenizer folder holds, so `CLIPTokenizer.from_pretrained` loads them.
"""

from __future__ import annotations

import json
from pathlib import Path

# Words the built-in worlds use; anything else still tokenizes, character by character.
WORDS = (
    "a an the and of with on in at to it is make turn into photo picture image "
    "red green blue yellow purple orange white black gray pink cyan magenta brown "
    "circle square triangle star ring cross shape shapes big small large tiny left right top "
    "bottom center middle background cat dog bird tree house car person bench flower "
    "sky sea winter summer night day"
).split()

SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-unicode table CLIP (and GPT-2) use."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _bpe(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges to a word's symbols the way CLIP's tokenizer does (lowest rank first)."""
    parts = list(parts)
    while len(parts) > 1:
        pairs = zip(parts[:-1], parts[1:], strict=True)
        known = [(ranks[p], i) for i, p in enumerate(pairs) if p in ranks]
        if not known:
            break
        _, i = min(known)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def build_vocab(words: tuple[str, ...] | list[str] = WORDS) -> tuple[dict[str, int], list[str]]:
    """Return (vocab, merges) for a tokenizer whose listed words are single tokens.

    Each word is first split by the merges added so far (exactly as the tokenizer will split
    it), then its pieces are joined left to right by new merges. New merges rank after every
    earlier one, so they never change how an earlier word is split: "red" adding "r e" cannot
    leave "green" as g/re/e/n.
    """
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    ranks: dict[tuple[str, str], int] = {}
    seen = set(vocab_list)
    for word in words:
        parts = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        current = parts[0]
        for nxt in parts[1:]:
            merged = current + nxt
            if (current, nxt) not in ranks:
                ranks[(current, nxt)] = len(merges)
                merges.append(f"{current} {nxt}")
            if merged not in seen:
                vocab_list.append(merged)
                seen.add(merged)
            current = merged
    vocab_list += list(SPECIAL)
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def write_tokenizer(folder: Path, words: tuple[str, ...] | list[str] = WORDS) -> int:
    """Write a CLIP tokenizer folder; returns the vocabulary size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": SPECIAL[0], "eos_token": SPECIAL[1], "pad_token": SPECIAL[1],
        "unk_token": SPECIAL[1],
    }))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": SPECIAL[0], "eos_token": SPECIAL[1], "pad_token": SPECIAL[1],
        "unk_token": SPECIAL[1],
    }))
    return len(vocab)
