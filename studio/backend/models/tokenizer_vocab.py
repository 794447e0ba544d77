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


def clip_bpe_merges() -> list[str]:
    """CLIP's 48894 BPE merges, as OpenAI's tokenizer reads them from its
    `bpe_simple_vocab_16e6.txt.gz` (first line skipped, 49152 - 256 - 2 merges kept). The
    file ships in the `open_clip` package (a dependency), found without importing it."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "CLIP's BPE merges come from the open_clip package: pip install open_clip_torch")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    return lines[1:49152 - 256 - 2 + 1]


def write_clip_tokenizer(folder: Path, pad_token: str = SPECIAL[1]) -> Path:
    """Write the real CLIP tokenizer (49408 tokens, as OpenAI's CLIP ViT-L/14 repo and
    SD's `tokenizer` folders hold it) into `folder`, built offline from CLIP's BPE merges:
    the vocabulary is the 256 byte symbols, the same with "</w>", each merge's result, then
    the two special tokens. `pad_token` is "<|endoftext|>" (SD1.5, SDXL's first tokenizer)
    or "!" (SDXL's second, OpenCLIP's)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = clip_bpe_merges()
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges] + list(SPECIAL)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    specials = {"bos_token": SPECIAL[0], "eos_token": SPECIAL[1], "pad_token": pad_token,
                "unk_token": SPECIAL[1]}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "add_prefix_space": False, "errors": "replace", **specials}))
    return folder
