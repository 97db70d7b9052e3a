"""Embedding formats: exact round trips, diffusers' own loader reading what we write, A1111 PNG
chunks, blending, `convert`/`inspect`, and one-line refusals of bad or malicious files."""

from __future__ import annotations

import pathlib
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from styleprompt.cli import main
from styleprompt.diffusion.formats import (
    Embedding,
    blend_embeddings,
    export_all,
    read_embedding,
    write_embedding,
)
from styleprompt.diffusion.tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline
from styleprompt.plumbing.errors import UserError

SD_FILES = {  # format -> file name
    "diffusers": "a.safetensors",
    "a1111": "a.pt",
    "emb_params": "e.safetensors",
    "a1111-png": "a.png",
}


@pytest.fixture
def sd_emb() -> Embedding:
    torch.manual_seed(1)
    return Embedding("<s1>", torch.randn(3, 32), step=7)


@pytest.fixture
def xl_emb() -> Embedding:
    torch.manual_seed(2)
    return Embedding("<x1>", torch.randn(2, 32), torch.randn(2, 64), step=4)


def _same(a: Embedding, b: Embedding) -> None:
    assert a.token == b.token
    assert torch.equal(a.vectors, b.vectors)
    assert (a.vectors_2 is None) == (b.vectors_2 is None)
    if a.vectors_2 is not None:
        assert torch.equal(a.vectors_2, b.vectors_2)


def test_sd_round_trips_through_every_format_are_exact(sd_emb, tmp_path):
    current = sd_emb
    # A chain through every format and back: any rounding anywhere breaks equality.
    chain = ["diffusers", "a1111", "emb_params", "a1111-png", "diffusers"]
    for i, fmt in enumerate(chain):
        name = SD_FILES[fmt] if i < len(chain) - 1 else "back.bin"
        written = write_embedding(current, tmp_path / f"{i}-{name}", fmt)
        current = read_embedding(written[0])
        assert current.format == fmt
        _same(current, sd_emb)
        if not name.endswith(".bin"):  # a diffusers .bin holds the tensor alone; the others keep the step
            assert current.step == 7, fmt


def test_sdxl_round_trips_single_file_and_pair_are_exact(xl_emb, tmp_path):
    single = write_embedding(xl_emb, tmp_path / "x.safetensors", "sdxl")
    assert sorted(load_file(single[0])) == ["clip_g", "clip_l"]
    from_single = read_embedding(single[0])
    assert from_single.format == "sdxl" and from_single.step == 4
    _same(from_single, xl_emb)
    pair = write_embedding(from_single, tmp_path / "pair" / "learned_embeds.safetensors", "sdxl-pair")
    assert [p.name for p in pair] == ["learned_embeds.safetensors", "learned_embeds_2.safetensors"]
    for path in pair:  # either file of the pair reads as the whole SDXL embedding
        back = read_embedding(path)
        assert back.format == "sdxl-pair"
        _same(back, xl_emb)


def test_tokens_are_kept_and_renamed(sd_emb, tmp_path):
    path = write_embedding(sd_emb, tmp_path / "style.safetensors", "emb_params")[0]
    assert read_embedding(path).token == "<s1>"  # stored in the metadata, not lost to the file name
    save_file({"emb_params": sd_emb.vectors}, str(tmp_path / "civitai-style.safetensors"))
    assert read_embedding(tmp_path / "civitai-style.safetensors").token == "civitai-style"  # A1111's rule
    assert read_embedding(path, token="<other>").token == "<other>"


def test_sd_files_load_in_diffusers_own_loader(sd_emb, tmp_path):
    for fmt, name in [
        ("diffusers", "a.safetensors"),
        ("diffusers", "a.bin"),
        ("a1111", "a.pt"),
        ("emb_params", "e.safetensors"),
    ]:
        path = write_embedding(sd_emb, tmp_path / fmt / name, fmt)[0]
        pipe = build_tiny_pipeline()
        # emb_params files carry no token name: diffusers (like A1111) needs one given.
        pipe.load_textual_inversion(str(path), token="<s1>" if fmt == "emb_params" else None)
        ids = pipe.tokenizer.convert_tokens_to_ids(["<s1>", "<s1>_1", "<s1>_2"])
        rows = pipe.text_encoder.get_input_embeddings().weight[ids].detach()
        assert torch.equal(rows, sd_emb.vectors), fmt
        assert pipe.maybe_convert_prompt("a <s1> style", pipe.tokenizer) == "a <s1> <s1>_1 <s1>_2 style"


def test_sdxl_files_load_the_documented_two_call_way(xl_emb, tmp_path):
    single = write_embedding(xl_emb, tmp_path / "x.safetensors", "sdxl")[0]
    pair = write_embedding(xl_emb, tmp_path / "pair" / "learned_embeds.safetensors", "sdxl-pair")
    names = ["<x1>", "<x1>_1"]

    def rows(pipe):
        return [
            te.get_input_embeddings().weight[tok.convert_tokens_to_ids(names)].detach()
            for tok, te in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
        ]

    pipe = build_tiny_sdxl_pipeline()
    state = load_file(single)
    pipe.load_textual_inversion(state["clip_l"], token=names, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(
        state["clip_g"], token=names, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )
    assert all(torch.equal(a, b) for a, b in zip(rows(pipe), xl_emb.parts()))

    pipe = build_tiny_sdxl_pipeline()
    pipe.load_textual_inversion(str(pair[0]), text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(str(pair[1]), text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    assert all(torch.equal(a, b) for a, b in zip(rows(pipe), xl_emb.parts()))


def test_reads_an_a1111_png_written_by_a1111s_own_encoding(sd_emb, tmp_path):
    """The chunk exactly as A1111 writes it: base64 of JSON with {"TORCHTENSOR": lists}."""
    import base64
    import json

    from PIL import Image, PngImagePlugin

    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": {"TORCHTENSOR": sd_emb.vectors.double().tolist()}},
        "name": "painterly",
        "step": 1500,
        "sd_checkpoint": "abc",
        "sd_checkpoint_name": "v1-5",
    }
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(data).encode()).decode())
    Image.new("RGB", (32, 32)).save(tmp_path / "painterly.png", pnginfo=info)
    emb = read_embedding(tmp_path / "painterly.png")
    assert emb.token == "painterly" and emb.step == 1500 and emb.format == "a1111-png"
    assert torch.equal(emb.vectors, sd_emb.vectors)


def test_blend_is_the_weighted_sum(tmp_path):
    torch.manual_seed(3)
    a, b = Embedding("<a>", torch.randn(2, 32)), Embedding("<b>", torch.randn(2, 32))
    pa = write_embedding(a, tmp_path / "a.safetensors", "diffusers")[0]
    pb = write_embedding(b, tmp_path / "b.pt", "a1111")[0]  # formats may differ
    assert (
        main(["blend", f"{pa}:0.7", f"{pb}:0.3", "--token", "<mix>", "--output", str(tmp_path / "mix.safetensors")])
        == 0
    )
    mixed = read_embedding(tmp_path / "mix.safetensors")
    assert mixed.token == "<mix>"
    assert torch.equal(mixed.vectors, 0.7 * a.vectors + 0.3 * b.vectors)
    xl = Embedding("<x>", torch.randn(2, 32), torch.randn(2, 64))
    both = blend_embeddings([(xl, 0.25), (xl, 0.5)], "<x2>")
    assert torch.equal(both.vectors_2, 0.25 * xl.vectors_2 + 0.5 * xl.vectors_2)
    with pytest.raises(UserError, match="same --vectors"):
        blend_embeddings([(a, 0.5), (Embedding("<c>", torch.randn(3, 32)), 0.5)], "<m>")
    with pytest.raises(UserError, match="one model family"):
        blend_embeddings([(a, 0.5), (xl, 0.5)], "<m>")


def test_convert_and_inspect_commands(sd_emb, xl_emb, tmp_path, capsys):
    source = write_embedding(sd_emb, tmp_path / "learned_embeds.safetensors", "diffusers")[0]
    for fmt in ("diffusers", "a1111", "emb_params", "a1111-png"):
        assert main(["convert", str(source), "--to", fmt, "--output", str(tmp_path / "out" / fmt)]) == 0
    written = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert [p.name for p in written] == ["s1.pt", "s1.png", "learned_embeds.safetensors", "s1.safetensors"]
    for path in written:
        _same(read_embedding(path), sd_emb)
        capsys.readouterr()
        assert main(["inspect", str(path)]) == 0
        out = capsys.readouterr().out
        assert "token:   <s1>" in out and "vectors: 3" in out and "text_encoder 32" in out and "tiny" in out
    xl_path = write_embedding(xl_emb, tmp_path / "x.safetensors", "sdxl")[0]
    assert main(["inspect", str(xl_path)]) == 0
    out = capsys.readouterr().out
    assert "clip_l 32, clip_g 64" in out and "tiny-sdxl" in out
    real = write_embedding(
        Embedding("<r>", torch.zeros(1, 768), torch.zeros(1, 1280)), tmp_path / "r.safetensors", "sdxl"
    )[0]
    assert main(["inspect", str(real)]) == 0
    assert "SDXL (widths 768+1280)" in capsys.readouterr().out
    # Converting an SD token to an SDXL format is one line, not a traceback.
    assert main(["convert", str(source), "--to", "sdxl", "--output", str(tmp_path / "no.safetensors")]) == 2
    assert "needs vectors for both SDXL text encoders" in capsys.readouterr().err
    assert main(["convert", str(source), "--to", "diffusers", "--output", str(source)]) == 2


def test_export_all_writes_every_format_that_fits(sd_emb, xl_emb, tmp_path):
    files = export_all(sd_emb, tmp_path / "sd")
    assert set(files) == {"diffusers", "a1111", "emb_params", "a1111-png"}
    files = export_all(xl_emb, tmp_path / "xl")
    assert set(files) == {"sdxl", "sdxl-pair"} and len(files["sdxl-pair"]) == 2
    for paths in files.values():
        _same(read_embedding(paths[0]), xl_emb)


class _Payload:
    """A pickle that would create a file when unpickled (a stand-in for running any code)."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path):
    sentinel = tmp_path / "ran"
    zipped = tmp_path / "evil.pt"
    torch.save({"<evil>": _Payload(sentinel)}, zipped)  # torch's zip layout, payload inside
    raw = tmp_path / "evil.bin"
    raw.write_bytes(pickle.dumps({"string_to_param": {"*": _Payload(sentinel)}}))  # a bare pickle
    for path in (zipped, raw):
        with pytest.raises(UserError, match="refusing .*nothing was run") as info:
            read_embedding(path)
        assert "\n" not in str(info.value)
        assert not sentinel.exists()
    # Proof the payload is live: unpickled without weights_only it does run.
    pickle.loads(raw.read_bytes())
    assert sentinel.exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: save_file({}, str(p)), "holds no embedding"),
        (lambda p: torch.save({}, p.with_suffix(".pt")), "holds no embedding"),
        (lambda p: save_file({"<n>": torch.tensor([[1.0, float("nan")]])}, str(p)), "NaN or infinite"),
        (
            lambda p: save_file({"clip_l": torch.ones(2, 8), "clip_g": torch.full((2, 16), float("inf"))}, str(p)),
            "NaN or infinite",
        ),
        (lambda p: save_file({"a": torch.ones(1, 4), "b": torch.ones(1, 4)}, str(p)), "holds 2 entries"),
        (lambda p: save_file({"clip_l": torch.ones(2, 8), "clip_g": torch.ones(3, 16)}, str(p)), "inconsistent"),
        (lambda p: save_file({"<i>": torch.ones(2, 4, dtype=torch.int64)}, str(p)), "floating-point"),
        (lambda p: save_file({"<i>": torch.ones(2, 4, 4)}, str(p)), "shape"),
        (lambda p: p.write_bytes(b"\x00" * 5), "cannot read"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (
            lambda p: torch.save(
                {"string_to_param": {"*": torch.ones(1, 4), "#": torch.ones(1, 4)}}, p.with_suffix(".pt")
            ),
            "exactly one",
        ),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, make, message):
    path = tmp_path / "bad.safetensors"
    make(path)
    target = path if path.exists() else path.with_suffix(".pt")
    with pytest.raises(UserError, match=message) as info:
        read_embedding(target)
    assert "\n" not in str(info.value)


def test_png_without_an_embedding_and_missing_files(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(UserError, match="no sd-ti-embedding"):
        read_embedding(tmp_path / "plain.png")
    with pytest.raises(UserError, match="not found"):
        read_embedding(tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="writes .pt"):
        write_embedding(Embedding("<a>", torch.ones(1, 4)), tmp_path / "a.safetensors", "a1111")
