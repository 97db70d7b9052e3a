"""Placeholder tokens: adding them to a tokenizer and text encoder, and saving what was learned.

Why the naming `<tok>`, `<tok>_1`, ... `<tok>_{n-1}`: it is what diffusers'
`load_textual_inversion` creates for an n-vector embedding, so a token trained here and the same
file loaded later by plain diffusers tokenize identically.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.files import atomic_path

DIFFUSERS_WEIGHT_NAME = "learned_embeds.safetensors"


def token_names(token: str, num_vectors: int) -> list[str]:
    """The tokenizer entries of an n-vector placeholder, in diffusers' naming."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def expand_token(text: str, token: str, num_vectors: int) -> str:
    """Replace `token` in a prompt by all its vectors' names ("<s> <s>_1 <s>_2")."""
    return text.replace(token, " ".join(token_names(token, num_vectors)))


# Slots that prompts fill in (styleprompt.diffusion.templates, generate's --prompt): a token
# holding one would be replaced by a subject or a caption in every prompt, and never be learned
# or used.
PROMPT_SLOTS = {"{class}": "the subject (a lighthouse, a city)", "[filewords]": "the image's caption"}


def validate_token_name(token: str) -> None:
    """One printable word that no prompt slot rewrites."""
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise UserError(f"invalid token {token!r}: use one word without spaces, such as <my-style>")
    for slot, filled in PROMPT_SLOTS.items():
        if slot in token:
            raise UserError(
                f"invalid token {token!r}: {slot} is a slot that every prompt fills in with {filled}, so the "
                "token would be replaced in them; name it without the slot, such as <my-style>"
            )


def vocabulary_word(tokenizer, name: str) -> str | None:
    """The entry of the model's own vocabulary that a new token `name` would shadow, or None.

    Why the extra forms: CLIP's vocabulary holds a whole word as `painting</w>` (and word starts
    without the marker), and it lowercases prompts, so a check for `painting` alone misses the
    word that an added token `painting` would then silently replace in every prompt. Tokens added
    earlier (ours, or a loaded embedding's) are not the model's words and are not reported here.
    """
    vocab = tokenizer.get_vocab()
    added = tokenizer.get_added_vocab()
    for form in dict.fromkeys((name, name.lower(), f"{name}</w>", f"{name.lower()}</w>")):
        if form in vocab and form not in added:
            return form
    return None


def check_not_a_word(tokenizer, names: list[str], fix: str) -> None:
    """Refuse token names that are words of the model's vocabulary (they would replace the word)."""
    for name in names:
        word = vocabulary_word(tokenizer, name)
        if word is not None:
            raise UserError(
                f"token {name!r} is a word of the model's vocabulary ({word!r}): it would replace that word in "
                f"every prompt; {fix}"
            )


def add_placeholder_tokens(tokenizer, text_encoder, token: str, num_vectors: int, init_word: str) -> list[int]:
    """Add a new token's entries for training, each row starting at the initializer word.

    Each new row starts as the mean of the initializer word's sub-token embeddings, so training
    starts from a meaningful point ("painting") rather than noise.
    """
    validate_token_name(token)
    if num_vectors < 1:
        raise SettingError("vectors", f"{{setting}} must be at least 1 (got {num_vectors})")
    names = token_names(token, num_vectors)
    fix = f"choose another --token such as <{token.strip('<>')}-style>"
    check_not_a_word(tokenizer, names, fix)
    vocab = tokenizer.get_vocab()
    taken = [n for n in names if n in vocab]
    if taken:
        raise UserError(f"token {taken[0]!r} is already in the tokenizer's vocabulary; {fix}")
    init_ids = tokenizer.encode(init_word, add_special_tokens=False)
    if not init_word.strip() or not init_ids:
        raise SettingError(
            "init_word", f"{{setting}} {init_word!r} gives no tokens; use an ordinary word such as painting"
        )
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        init = weight[init_ids].float().mean(dim=0)
    return _write_new_rows(tokenizer, text_encoder, names, init.expand(num_vectors, -1))


def install_token(tokenizer, text_encoder, token: str, vectors: torch.Tensor, rename: str) -> bool:
    """Add `token` (n entries, diffusers' naming) with these learned rows; False when it is
    already there with the same rows (loading a file twice is a no-op).

    Why not `pipe.load_textual_inversion`: it shrinks a padded embedding table to the tokenizer's
    length and recomputes the table's covariance to initialise rows it then overwrites.
    `rename` is the command that renames a token that clashes.
    """
    names = token_names(token, int(vectors.shape[0]))
    check_not_a_word(tokenizer, names, f"rename it with {rename}")
    vocab = tokenizer.get_vocab()
    present = [name in vocab for name in names]
    longer = f"{token}_{len(names)}" in vocab
    table = text_encoder.get_input_embeddings().weight
    if all(present) and not longer:
        ids = tokenizer.convert_tokens_to_ids(names)
        if torch.equal(table[ids].detach(), vectors.to(table.device, table.dtype)):
            return False
    if any(present) or longer:
        raise SettingError(
            "style_scale",
            f"token {token} is already in the model with other vectors (another file, or another {{setting}}); "
            f"rename one with {rename}",
        )
    _write_new_rows(tokenizer, text_encoder, names, vectors)
    return True


def _write_new_rows(tokenizer, text_encoder, names: list[str], rows: torch.Tensor) -> list[int]:
    """The one installer: add `names` to the tokenizer, grow the embedding table, write `rows`."""
    added = tokenizer.add_tokens(names)
    if added != len(names):
        raise UserError(f"token {names[0]!r} collides with an existing tokenizer entry; choose another --token")
    ids = list(tokenizer.convert_tokens_to_ids(names))
    # Grow only: some checkpoints pad their table past the tokenizer, and shrinking would cut rows.
    if len(tokenizer) > text_encoder.get_input_embeddings().weight.shape[0]:
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[ids] = rows.to(weight.device, weight.dtype)
    return ids


def embedding_width(text_encoder) -> int:
    return int(text_encoder.get_input_embeddings().weight.shape[1])


def file_sha256(path: str | os.PathLike, length: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def save_diffusers_embedding(
    path: str | os.PathLike, token: str, vectors: torch.Tensor, metadata: dict[str, str] | None = None
) -> Path:
    """Write diffusers' `{token: tensor[n, d]}` safetensors file, atomically.

    This is the file `pipe.load_textual_inversion(path)` reads unchanged.
    """
    from safetensors.torch import save_file

    tensor = vectors.detach().to("cpu").contiguous()
    if tensor.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        tensor = tensor.to(torch.float32)  # a float embedding keeps its precision (convert copies exactly)
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)
    if not torch.isfinite(tensor).all():
        raise UserError(f"refusing to save {path}: the embedding has NaN or infinite values")
    meta = {"format": "pt", "styleprompt.token": token, "styleprompt.vectors": str(tensor.shape[0])}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file({token: tensor}, str(tmp), metadata=meta)
    return target
