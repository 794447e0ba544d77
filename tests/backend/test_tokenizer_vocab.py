"""The offline CLIP vocabulary: every listed word is one token, anything else still encodes."""

from __future__ import annotations

from transformers import CLIPTokenizer

from studio.backend.models.tokenizer_vocab import WORDS, write_tokenizer


def test_every_listed_word_is_a_single_token_and_other_text_still_encodes(tmp_path):
    write_tokenizer(tmp_path)
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    split = {w: tok.convert_ids_to_tokens(tok(w, add_special_tokens=False).input_ids)
             for w in WORDS}
    assert {w: t for w, t in split.items() if t != [w + "</w>"]} == {}
    # merges added for later words never change how earlier ones split ("red" vs "green")
    ids = tok("a green triangle and a red circle").input_ids
    assert len(ids) == 2 + 7
    assert tok.decode(tok("a zebra").input_ids, skip_special_tokens=True) == "a zebra"
    assert tok.model_max_length == 77
