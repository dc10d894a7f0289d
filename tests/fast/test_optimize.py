"""optimize_for_inference: every conv+BN folded, outputs equal to the eager model, input model untouched."""

from __future__ import annotations

import torch

import edgevl
from edgevl.fast import optimize_for_inference
from edgevl.fast.packed import PointwiseLinear
from edgevl.fast.text import PooledText, TrimmedText
from edgevl.models.blocks import ConvNorm
from edgevl.models.text import TextTransformer


def _randomize_bn(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_optimized_matches_eager_and_has_no_convnorm():
    torch.manual_seed(0)
    model = edgevl.create_model("world-student-mci")
    _randomize_bn(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, ConvNorm) for m in fast.modules())
    assert any(isinstance(m, PointwiseLinear) for m in fast.modules())
    assert not any(
        isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and m.stride == (1, 1)
        for m in fast.modules()
    )
    assert any(isinstance(m, ConvNorm) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.rand(3, 3, 64, 64)
    ids = edgevl.get_tokenizer("world-student-mci")(["a red circle", "two blue squares", ""])
    with torch.inference_mode():
        ref_img, ref_txt = model.encode_image(x), model.encode_text(ids)
        got_img = fast.encode_image(x.contiguous(memory_format=torch.channels_last))
        got_txt = fast.encode_text(ids)
    assert torch.allclose(got_img, ref_img, atol=1e-5, rtol=1e-4)
    assert torch.allclose(got_txt, ref_txt, atol=1e-5)
    with torch.inference_mode():  # contiguous NCHW inputs work too
        assert torch.allclose(fast.encode_image(x), ref_img, atol=1e-5, rtol=1e-4)


def test_causal_text_trimming_is_exact():
    torch.manual_seed(0)
    model = edgevl.create_model("world-teacher-vit")
    assert model.text.causal
    fast = optimize_for_inference(model)
    assert isinstance(fast.text, TrimmedText) and type(model.text) is TextTransformer
    ids = edgevl.get_tokenizer("world-teacher-vit")(["a red circle", "two small blue squares above a star", ""])
    with torch.inference_mode():
        assert torch.allclose(fast.encode_text(ids), model.encode_text(ids), atol=1e-5)


def _randomize_layer_scales(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if hasattr(m, "gamma") and isinstance(m.gamma, torch.nn.Parameter):
            m.gamma.data.copy_(torch.rand(m.gamma.shape, generator=g) * 0.5 + 0.25)


def test_fused_feed_forward_matches_eager_on_every_block_kind():
    """MCi RepMixer + attention blocks (image), MCt conv blocks and transformer blocks (text), with layer scales
    of ~0.5 folded into the second GEMM: fused equals eager, and every GELU FFN was fused."""
    from edgevl.fast.fused import FusedAttentionBlock, FusedConvBlock, FusedResidualAttentionBlock
    from edgevl.fast.packed import PackedConv

    torch.manual_seed(0)
    model = edgevl.create_model("MobileCLIP-S0", vision_cfg={"image_size": 64})
    _randomize_bn(model)
    _randomize_layer_scales(model)
    fast = optimize_for_inference(model)
    kinds = {type(m) for m in fast.modules()}
    assert {FusedConvBlock, FusedAttentionBlock, FusedResidualAttentionBlock, PackedConv} <= kinds
    gelu_left = [n for n, m in fast.visual.named_modules() if isinstance(m, torch.nn.GELU)]
    # only blocks with squeeze-excite (stage 3-4 downsampling, final conv) keep a separate GELU
    assert gelu_left == [f"trunk.{n}.act" for n in ("stages.2.downsample.proj.0", "stages.3.downsample.proj.0",
                                                     "final_conv")]
    unfused = optimize_for_inference(model, fuse=False)
    assert not any(isinstance(m, (FusedConvBlock, PackedConv)) for m in unfused.modules())
    x = torch.rand(2, 3, 64, 64)
    ids = edgevl.get_tokenizer("MobileCLIP-S0")(["a red circle on a plain background", "two blue squares"])
    with torch.inference_mode():
        ref_img, ref_txt = model.encode_image(x), model.encode_text(ids)
        for path in (fast, unfused):
            assert torch.allclose(path.encode_image(x), ref_img, atol=1e-5, rtol=1e-4)
            assert torch.allclose(path.encode_text(ids), ref_txt, atol=1e-5, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the fused blocks fall back to plain ops
            bf16 = fast.encode_image(x).float()
    assert torch.nn.functional.cosine_similarity(bf16, ref_img).min() > 0.99


def test_quickgelu_towers_keep_their_activation():
    torch.manual_seed(0)
    model = edgevl.create_model("ViT-B-32-quickgelu", vision_cfg={"image_size": 64})
    fast = optimize_for_inference(model)
    assert not any(type(m).__name__.startswith("Fused") for m in fast.modules())
    ids = edgevl.get_tokenizer("ViT-B-32-quickgelu")(["a dog"])
    with torch.inference_mode():
        assert torch.allclose(fast.encode_text(ids), model.encode_text(ids), atol=1e-5)


def test_fused_ffn_row_tiles_equal_one_pass(monkeypatch):
    """Large inputs run fc1 → GELU → fc2 in row tiles (the last one short); the result equals the untiled
    formula, and small inputs stay in one tile."""
    from edgevl.fast.fused import FusedFFN

    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(8, 24), torch.nn.Linear(24, 8)
    ffn = FusedFFN(fc1, fc2, gamma=torch.rand(8))
    monkeypatch.setattr(FusedFFN, "TILE_HIDDEN_ELEMENTS", 24 * 256)  # 256-row tiles
    calls = []
    original = ffn._tile
    monkeypatch.setattr(ffn, "_tile", lambda rows, res: calls.append(len(rows)) or original(rows, res))
    x, residual = torch.randn(2, 300, 8), torch.randn(2, 300, 8)
    with torch.inference_mode():
        out = ffn(x, residual)
        assert calls == [256, 256, 88]
        expected = residual + ffn.b2 + torch.nn.functional.gelu(fc1(x)) @ ffn.w2.t()
        assert torch.allclose(out, expected, atol=1e-5)
        calls.clear()
        ffn(x[:, :200], residual[:, :200])
        assert calls == [400]


def test_channel_multiplier_convs_split_into_depthwise_convs():
    """MCi's downsampling and final grouped convs (m = 2 output channels per input channel) become m depthwise
    convs with interleaved outputs: equal to the grouped conv in both memory formats, and for m = 3."""
    from edgevl.fast import TABLE, replace_modules
    from edgevl.fast.packed import MultiplierDepthwiseConv

    channels_last = next(stage for stage in TABLE if stage.name == "channels_last")
    torch.manual_seed(0)
    for m, stride, bias in ((2, 2, True), (3, 1, False)):
        conv = torch.nn.Conv2d(5, 5 * m, 3, stride=stride, padding=1, groups=5, bias=bias)
        holder = torch.nn.Sequential(conv)
        assert replace_modules(holder, channels_last.forms) is holder and isinstance(holder[0], MultiplierDepthwiseConv)
        x = torch.randn(2, 5, 9, 9)
        with torch.inference_mode():
            for inp in (x, x.contiguous(memory_format=torch.channels_last)):
                out = holder(inp)
                assert torch.allclose(out, conv(inp), atol=1e-6)
                assert out.is_contiguous(memory_format=torch.channels_last) == (inp is not x)
    plain = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=4), torch.nn.Conv2d(4, 8, 3, groups=2))
    replace_modules(plain, channels_last.forms)
    assert [type(mod) for mod in plain] == [torch.nn.Conv2d, torch.nn.Conv2d]  # neither conv was replaced
    fast = optimize_for_inference(edgevl.create_model("MobileCLIP-S0", vision_cfg={"image_size": 64}))
    assert sum(isinstance(mod, MultiplierDepthwiseConv) for mod in fast.modules()) == 4


def _full_text(fast: torch.nn.Module) -> torch.nn.Module:
    """A copy of `fast` whose text tower computes every row of its last blocks (trimmed, but not pruned)."""
    import copy

    full = copy.deepcopy(fast)
    full.text = TrimmedText(full.text)
    return full


def test_pooled_pruning_is_exact_on_mct_causal_and_bidirectional_towers():
    """The last block(s) computed only where the end-token output depends on them: same embeddings as the full
    stack, for end tokens at the start, middle and last position (the ±10 window of MCt clipped at both ends)."""
    texts = ["a", "a photo of a small red car parked on the street", "word " * 90]
    for name in ("MobileCLIP-S0", "MobileCLIP-S1", "world-teacher-vit"):
        torch.manual_seed(0)
        model = edgevl.create_model(name, vision_cfg={"image_size": 64})
        _randomize_bn(model)
        _randomize_layer_scales(model)
        fast = optimize_for_inference(model)
        assert isinstance(fast.text, PooledText) and type(model.text) is TextTransformer
        ids = edgevl.get_tokenizer(name)(texts)
        assert ids.argmax(-1).tolist()[::2] == [2, model.context_length - 1]
        with torch.inference_mode():
            ref = model.encode_text(ids)
            assert torch.allclose(fast.encode_text(ids), ref, atol=1e-5), name
            assert torch.allclose(_full_text(fast).encode_text(ids), ref, atol=1e-5), name


def test_pooled_pruning_runs_the_last_blocks_on_few_rows():
    """MCt: the last conv block's FFN sees one row per text, the attention block before it a 21-row window;
    with pruning off both see all 77 rows."""
    torch.manual_seed(0)
    fast = optimize_for_inference(edgevl.create_model("MobileCLIP-S0", vision_cfg={"image_size": 64}))
    *_, before, last = fast.text.transformer.resblocks
    rows: dict[str, int] = {}

    def recorder(key: str):
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            rows[key] = args[0].numel() // args[0].shape[-1]

        return hook

    before.ffn.register_forward_hook(recorder("before"))
    last.ffn.register_forward_hook(recorder("last"))
    ids = edgevl.get_tokenizer("MobileCLIP-S0")(["a dog", "two cats on a sofa"])
    with torch.inference_mode():
        fast.encode_text(ids)
        assert rows == {"before": 2 * 21, "last": 2}
        fast.text = TrimmedText(fast.text)  # pruning off
        fast.encode_text(ids)
        assert rows == {"before": 2 * 77, "last": 2 * 77}


def test_compiled_graphs_keep_pooled_pruning_but_not_the_data_dependent_trim(monkeypatch):
    """Under torch.compile (simulated: `is_compiling` true) the fixed-shape end-token pruning stays on, while the
    causal trim, whose length depends on the data, is skipped; the embeddings stay exact either way."""
    torch.manual_seed(0)
    model = edgevl.create_model("world-teacher-vit")
    fast = optimize_for_inference(model)
    ids = edgevl.get_tokenizer("world-teacher-vit")(["a red circle", "two small blue squares above a star"])
    *_, last = fast.text.transformer.resblocks
    rows: list[int] = []
    last.ffn.register_forward_hook(lambda module, args, out: rows.append(args[0].numel() // args[0].shape[-1]))
    seen_lengths: list[int] = []
    first = fast.text.transformer.resblocks[0]
    first.register_forward_pre_hook(lambda module, args: seen_lengths.append(args[0].shape[1]))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with torch.inference_mode():
        assert torch.allclose(fast.encode_text(ids), model.encode_text(ids), atol=1e-5)
    assert rows == [2] and seen_lengths == [model.context_length]


def test_pooled_pruning_of_a_one_block_tower():
    """A text tower with one attention block (alone, or between MCt's two RepMixer blocks) prunes exactly too."""
    texts = ["a", "a photo of a small red car"]
    for name, text_cfg in (("world-teacher-vit", {"layers": 1}), ("MobileCLIP-S0", {"layers": 1})):
        torch.manual_seed(0)
        model = edgevl.create_model(name, vision_cfg={"image_size": 64}, text_cfg=text_cfg)
        _randomize_bn(model)
        fast = optimize_for_inference(model)
        ids = edgevl.get_tokenizer(name)(texts)
        with torch.inference_mode():
            assert torch.allclose(fast.encode_text(ids), model.encode_text(ids), atol=1e-5), name
