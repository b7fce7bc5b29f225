"""A word-level CLIP tokenizer for the shapes world.

CLIP's tokenizer is byte-pair encoding; a word becomes one token when the merges rebuild it letter by
letter. The vocabulary holds every single character (so no text is ever lost to an unknown token),
every merge step of every world word, and the special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

from negguide.shapes.world import vocabulary

MAX_LENGTH = 16
SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def _word_symbols(word: str) -> list[str]:
    return [*word[:-1], word[-1] + "</w>"]


def write_tokenizer(folder: str | Path, words: list[str] | None = None,
                    max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """Write vocab.json, merges.txt and the tokenizer config to ``folder`` and load it back.

    Raises ``RuntimeError`` if any word does not come back as exactly one token.
    """
    words = vocabulary() if words is None else words
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens: list[str] = []
    merges: list[str] = []
    letters = sorted({ch for w in words for ch in w} | set("abcdefghijklmnopqrstuvwxyz"))
    for ch in letters:
        tokens += [ch, ch + "</w>"]
    # Longer words first: a merge's rank is its priority, so each word's own chain must outrank
    # the first merge of any shorter word that occurs inside it ("a n" inside "triangle").
    for word in sorted(words, key=len, reverse=True):
        symbols = _word_symbols(word)
        left = symbols[0]
        for right in symbols[1:]:
            merge = f"{left} {right}"
            if merge not in merges:
                merges.append(merge)
            left += right
            if left not in tokens:
                tokens.append(left)
    tokens += list(SPECIAL)
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {"model_max_length": max_length, "bos_token": SPECIAL[0], "eos_token": SPECIAL[1],
              "unk_token": SPECIAL[1], "pad_token": SPECIAL[1], "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2))
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    for word in words:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if ids != [vocab[word + "</w>"]]:
            raise RuntimeError(f"word {word!r} tokenizes to {ids}, not one token")
    return tokenizer
