"""kconv/runtime: the torch classes shipped inside model.py, run directly (import kconv.runtime.X)
and checked as copied into the generated files (tests/golden; every equivalence case checks its own
model.py through harness.convert_and_load).

Expected values come from torch's own modules (nn.BatchNorm2d, nn.LSTM's fused kernel,
F.prelu, F.conv2d with explicit padding) or from the definition written out in the test, never
from the class under test.
"""
from __future__ import annotations

import ast
import math

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from equivalence.harness import unused_definitions
from kconv import codecopy
from kconv.emit import activations
from kconv.runtime import activations as rt_act
from kconv.runtime import attention, conv, normalization, recurrent, regularization
from test_golden import GOLDEN, ruff_problems

RUNTIME = codecopy.RUNTIME_DIR


# --- the runtime code as code -----------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(p.name for p in RUNTIME.glob("*.py")))
def test_runtime_modules_import_only_torch(path):
    tree = ast.parse((RUNTIME / path).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0] if node.level == 0 else "kconv.runtime")
    assert imported <= {"torch", "kconv.runtime"}, imported
    if path == "__init__.py":
        assert not imported, "importing kconv.runtime must not import torch (the emitter reads the files)"


def test_runtime_is_lint_clean_and_formatted_as_model_py():
    """The copied source must pass the same ruff checks as model.py (line length 100)."""
    assert ruff_problems(sorted(RUNTIME.glob("*.py"))) == ""


@pytest.mark.parametrize("name", sorted(set(codecopy.runtime()) - codecopy.GENERATED))
def test_every_runtime_definition_copies_with_what_it_uses(name):
    defs = codecopy.runtime_definitions([name], generated=codecopy.GENERATED)
    assert defs[-1].name == name
    names = [d.name for d in defs]
    for d in defs:  # each after what it uses
        uses = d.free_names & set(codecopy.runtime())
        assert all(names.index(u) < names.index(d.name) for u in uses - codecopy.GENERATED), (d.name, uses)


def test_copy_of_unknown_name_is_an_error():
    defs = codecopy.of_module_source("def f(x):\n    return g(x) + torch.ones(1)\n")
    with pytest.raises(codecopy.CopyError, match="uses g"):
        codecopy.closure(["f"], defs)
    with pytest.raises(codecopy.CopyError, match="imports numpy"):
        codecopy.check_imports(codecopy.of_module_source("def f():\n    import numpy\n").values())


def test_keras_activation_is_the_generated_function_for_keras_3():
    """model.py gets keras_activation generated with only the activations it uses
    (kconv/emit/activations.py, hard_sigmoid per Keras version); the runtime's is the same code for
    all of them, Keras 3."""
    names = [*activations.ELEMENTWISE, "hard_sigmoid"]
    assert codecopy.runtime()["keras_activation"].source + "\n\n" == activations.function_source(names, 3)
    with pytest.raises(ValueError, match="unknown activation"):
        rt_act.keras_activation("nope", torch.zeros(1))


# --- through the generated files ----------------------------------------------------------------------
GOLDENS = sorted(p.name for p in GOLDEN.glob("*.py"))


@pytest.mark.parametrize("golden", GOLDENS)
def test_golden_model_py_copies_runtime_code_verbatim_and_nothing_unused(golden):
    src = (GOLDEN / golden).read_text()
    assert unused_definitions(src) == []
    tree = ast.parse(src)
    runtime = codecopy.runtime()
    copied = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in runtime
              and n.name not in codecopy.GENERATED]
    for name in copied:
        assert runtime[name].source in src, f"{golden}: {name} differs from kconv/runtime"


def test_unused_definitions_finds_an_unused_helper():
    src = "class A:\n    pass\n\n\nclass Model:\n    def f(self):\n        return B()\n\n\nclass B:\n    pass\n"
    assert unused_definitions(src) == ["A"]


# --- normalization ---------------------------------------------------------------------------------
def _bn_pair(cls=normalization.KerasBatchNorm2d, **kw):
    torch.manual_seed(0)
    ours = cls(5, eps=1e-3, momentum=0.01, **kw)
    ref = nn.BatchNorm2d(5, eps=1e-3, momentum=0.01)
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 1.5, 5))
            m.bias.copy_(torch.linspace(-0.2, 0.3, 5))
            m.running_mean.copy_(torch.linspace(-1, 1, 5))
            m.running_var.copy_(torch.linspace(0.5, 2, 5))
    return ours, ref


def test_batchnorm_eval_is_torchs():
    ours, ref = _bn_pair()
    x = torch.randn(4, 5, 3, 3)
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x))
    assert list(ours.state_dict()) == list(ref.state_dict())  # the README's key contract


def test_batchnorm_train_updates_running_variance_with_the_biased_variance():
    ours, ref = _bn_pair()
    x = torch.randn(4, 5, 3, 3) * 2 + 1
    y = ours.train()(x)
    torch.testing.assert_close(y, ref.train()(x))  # normalised with the batch's statistics
    var = x.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(ours.running_var, torch.linspace(0.5, 2, 5) * 0.99 + var * 0.01)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    assert not torch.allclose(ours.running_var, ref.running_var)  # torch: unbiased
    assert int(ours.num_batches_tracked) == 1
    y.sum().backward()
    assert ours.weight.grad is not None


def test_frozen_batchnorm_uses_running_statistics_in_train_mode():
    ours, ref = _bn_pair(frozen=True)
    x = torch.randn(4, 5, 3, 3)
    before = ours.running_var.clone()
    torch.testing.assert_close(ours.train()(x), ref.eval()(x))
    torch.testing.assert_close(ours.running_var, before)


def test_batch_renorm_without_correction_is_batchnorm():
    """With renorm statistics equal to the batch's (r = 1, d = 0) the output is plain batch norm; the
    renorm statistics move towards the batch's by the renorm momentum."""
    ours, ref = _bn_pair(normalization.KerasBatchRenorm2d, renorm=(0.25, None, None, None))
    x = torch.randn(6, 5, 2, 2) * 3 - 1
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x))
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    std = torch.sqrt(var + 1e-3)
    with torch.no_grad():
        ours.renorm_mean.copy_(mean)
        ours.renorm_stddev.copy_(std)
        ours.moving_stddev.copy_(torch.sqrt(ours.running_var + 1e-3))
    torch.testing.assert_close(ours.train()(x), ref.train()(x))
    torch.testing.assert_close(ours.renorm_mean, mean)
    assert sorted(ours.state_dict()) == sorted([*ref.state_dict(), "moving_stddev", "renorm_mean", "renorm_stddev"])


def test_batch_renorm_clips_the_correction():
    ours, _ = _bn_pair(normalization.KerasBatchRenorm2d, renorm=(0.5, 1.0, 1.0, 0.0))
    x = torch.randn(6, 5, 2, 2) * 3 - 1
    with torch.no_grad():
        ours.renorm_mean.fill_(5.0)
        ours.renorm_stddev.fill_(0.1)
    # rmin = rmax = 1 and dmax = 0: r = 1, d = 0 whatever the renorm statistics
    ref = nn.BatchNorm2d(5, eps=1e-3)
    ref.load_state_dict({k: v for k, v in ours.state_dict().items() if k in ref.state_dict()})
    torch.testing.assert_close(ours.train()(x), ref.train()(x))


# --- recurrent ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["KerasSimpleRNN", "KerasLSTM", "KerasGRU"])
def test_recurrent_step_loop_equals_torchs_fused_kernel(cls):
    torch.manual_seed(1)
    fused = getattr(recurrent, cls)(3, 4, return_sequences=True, fast=True)
    loop = getattr(recurrent, cls)(3, 4, return_sequences=True, fast=False)
    loop.load_state_dict(fused.state_dict())
    x = torch.randn(2, 5, 3)
    y1, s1 = fused(x)
    y2, s2 = loop(x)
    torch.testing.assert_close(y1, y2)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b)
    # the fused path is torch's own module
    base = {"KerasSimpleRNN": nn.RNN, "KerasLSTM": nn.LSTM, "KerasGRU": nn.GRU}[cls]
    ref = base(3, 4, batch_first=True)
    ref.load_state_dict(fused.state_dict())
    torch.testing.assert_close(y1, ref(x)[0])


def test_masked_steps_carry_the_state():
    """Left padding: the masked leading steps leave the state at zero and output zeros, so the last
    output equals running the unpadded sequence."""
    torch.manual_seed(2)
    lstm = recurrent.KerasLSTM(3, 4, return_sequences=True, go_backwards=False)
    x = torch.randn(1, 6, 3)
    mask = torch.tensor([[False, False, True, True, True, True]])
    y, (h, c) = lstm(x, mask=mask)
    y_short, (h2, c2) = lstm(x[:, 2:])
    torch.testing.assert_close(y[:, 2:], y_short)
    torch.testing.assert_close(h, h2)
    assert torch.equal(y[:, :2], torch.zeros(1, 2, 4))


def test_gru_reset_before_the_matmul():
    """reset_after=False: n = tanh(x W_n + b_n + (r * h) U_n), written out here per step."""
    torch.manual_seed(3)
    gru = recurrent.KerasGRU(3, 2, reset_after=False)
    x = torch.randn(2, 4, 3)
    y, _ = gru(x)
    W, U, b, bh = gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
    h = torch.zeros(2, 2)
    for t in range(4):
        xr, xz, xn = (x[:, t] @ W.t() + b).chunk(3, 1)
        Ur, Uz, Un = U.chunk(3, 0)
        br, bz, bn = bh.chunk(3, 0)
        r = torch.sigmoid(xr + h @ Ur.t() + br)
        z = torch.sigmoid(xz + h @ Uz.t() + bz)
        n = torch.tanh(xn + (r * h) @ Un.t() + bn)
        h = z * h + (1 - z) * n
    torch.testing.assert_close(y, h)


def test_bidirectional_flips_the_backward_output_back():
    torch.manual_seed(4)
    fw = recurrent.KerasGRU(3, 2, return_sequences=True)
    bw = recurrent.KerasGRU(3, 2, return_sequences=True, go_backwards=True)
    bi = recurrent.KerasBidirectional(fw, bw, "concat", True)
    x = torch.randn(2, 4, 3)
    (y,), states = bi(x)
    torch.testing.assert_close(y, torch.cat([fw(x)[0], bw(x)[0].flip(1)], -1))
    assert len(states) == 2


# --- conv, activations, regularization, attention ---------------------------------------------------
@pytest.mark.parametrize("size,k,s,d", [(7, 3, 2, 1), (8, 3, 2, 1), (5, 2, 1, 2), (6, 4, 3, 1)])
def test_same_pad_gives_tensorflows_output_size(size, k, s, d):
    x = torch.randn(1, 1, size, size)
    padded = conv.same_pad(x, (k, k), (s, s), (d, d))
    y = F.conv2d(padded, torch.ones(1, 1, k, k), stride=s, dilation=d)
    assert y.shape[-1] == math.ceil(size / s)
    total = padded.shape[-1] - size
    first = total // 2
    assert padded[0, 0, first, first:size + first].equal(x[0, 0, 0])  # the extra padding goes last


def test_prelu_per_channel_is_torchs():
    m = rt_act.KerasPReLU((1, 1, 3), channels_first=True)
    with torch.no_grad():
        m.alpha.copy_(torch.tensor([[[0.1, 0.2, 0.3]]]))
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(m(x), F.prelu(x, torch.tensor([0.1, 0.2, 0.3])))


def test_noise_shape_dropout_drops_whole_channels():
    torch.manual_seed(5)
    m = regularization.NoiseShapeDropout(0.5, (None, 1, 1, None))
    x = torch.ones(3, 4, 4, 8)
    assert m.eval()(x) is x
    y = m.train()(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert (y == y[:, :1, :1, :]).all()  # one draw per (batch, channel)
    for cls in (regularization.GaussianDropout, regularization.GaussianNoise):
        assert cls(0.3).eval()(x) is x


def test_multi_head_attention_forms_agree_with_the_written_out_formula():
    torch.manual_seed(6)
    heads, key_dim, d = 2, 3, 4
    fixed = attention.KerasMultiHeadAttention(d, d, d, heads, key_dim, key_dim, d, True)
    general = attention.KerasMultiHeadAttentionEinsum(
        d, d, d, heads, key_dim, key_dim, (d,), True, "abc,cde->abde", "aecd,abcd->acbe",
        "acbe,aecd->abcd", "abcd,cde->abe", (3,))
    with torch.no_grad():
        for p in fixed.parameters():
            p.normal_()
    general.load_state_dict(fixed.state_dict())
    q, v = torch.randn(2, 5, d), torch.randn(2, 6, d)
    out, scores = fixed(q, v)
    torch.testing.assert_close(general(q, v)[0], out)
    # by hand: per head, softmax(q k^T / sqrt(key_dim)) v, then the output kernel
    P = dict(fixed.named_parameters())
    qh = torch.einsum("btd,dhk->bhtk", q, P["query_kernel"]) + P["query_bias"][None, :, None, :]
    kh = torch.einsum("btd,dhk->bhtk", v, P["key_kernel"]) + P["key_bias"][None, :, None, :]
    vh = torch.einsum("btd,dhk->bhtk", v, P["value_kernel"]) + P["value_bias"][None, :, None, :]
    w = torch.softmax(qh @ kh.transpose(-1, -2) / key_dim**0.5, -1)
    ref = torch.einsum("bhtk,hko->bto", w @ vh, P["output_kernel"]) + P["output_bias"]
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(scores, w)


@pytest.mark.parametrize(
    "cls, shape, layout",
    [
        ("KerasBatchNorm1d", (2, 5), torch.contiguous_format),
        ("KerasBatchNorm1d", (2, 5, 7), torch.contiguous_format),
        ("KerasBatchNorm2d", (2, 5, 4, 3), torch.channels_last),
        ("KerasBatchNorm2d", (2, 5, 4, 3), torch.contiguous_format),
        ("KerasBatchNorm3d", (2, 5, 3, 4, 3), torch.channels_last_3d),
    ],
)
def test_batchnorm_inplace_only_at_inference(cls, shape, layout):
    """KerasBatchNorm*(inplace=True) overwrites its input only in eval mode with autograd off, and
    computes there what the out-of-place module computes (within a rounding), in any memory layout."""
    from kconv.runtime import normalization

    torch.manual_seed(0)
    ref, ip = (getattr(normalization, cls)(5, eps=1e-3, inplace=flag) for flag in (False, True))
    with torch.no_grad():
        for p in ("weight", "bias", "running_mean"):
            getattr(ref, p).normal_()
        ref.running_var.uniform_(0.5, 2.0)
    ip.load_state_dict(ref.state_dict())
    ref.eval(), ip.eval()
    x = torch.randn(shape).contiguous(memory_format=layout)
    with torch.no_grad():
        want = ref(x)
        y = x.clone()
        got = ip(y)
    assert got.data_ptr() == y.data_ptr() and got.stride() == x.stride()  # overwritten
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # bfloat16 activations (CPU autocast): torch's kernel, out of place
        want = ref(x.bfloat16())
        y = x.bfloat16()
        got = ip(y)
    assert got.data_ptr() != y.data_ptr() and torch.equal(got, want)
    with torch.no_grad():  # torch.func.vmap and forward-mode AD work with autograd off too
        batched = torch.stack([x, 2 * x])
        got = torch.vmap(lambda t: ip(t.clone()))(batched)
        want = torch.stack([ref(x), ref(2 * x)])
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        with fwAD.dual_level():
            tangent = fwAD.unpack_dual(ip(fwAD.make_dual(x.clone(), torch.ones_like(x)))).tangent
        scale = ref.weight * torch.rsqrt(ref.running_var + ref.eps)
        torch.testing.assert_close(tangent, scale.view(-1, *[1] * (x.dim() - 2)).expand_as(x))
    y = x.clone().requires_grad_()
    out = ip(y)  # autograd on: out of place, differentiable
    assert out.data_ptr() != y.data_ptr() and torch.equal(y.detach(), x)
    out.sum().backward()
    assert y.grad is not None
    ip.train()
    y = x.clone()
    with torch.no_grad():
        assert ip(y).data_ptr() != y.data_ptr() and torch.equal(y, x)  # train mode: batch statistics


@pytest.mark.parametrize(
    "conv, bn, shape, layout",
    [
        ("nn.Conv1d(3, 4, 3, padding=1)", "KerasBatchNorm1d(4, eps=1e-3)", (2, 3, 9), torch.contiguous_format),
        ("nn.Conv2d(3, 4, 3, stride=2)", "KerasBatchNorm2d(4, eps=1e-3)", (2, 3, 9, 8), torch.channels_last),
        ("nn.Conv2d(4, 4, 3, groups=4, bias=False)", "KerasBatchNorm2d(4, eps=1e-3, inplace=True)", (2, 4, 7, 6),
         torch.contiguous_format),
        ("nn.Conv3d(3, 4, 2)", "KerasBatchNorm3d(4, eps=1e-3, frozen=True)", (2, 3, 4, 5, 3), torch.channels_last_3d),
    ],
)
def test_conv_bn_folds_at_inference_only(conv, bn, shape, layout):
    """conv_bn(conv, bn, x) is bn(conv(x)); at inference one convolution with bn folded in (bn's forward
    is not called), from the current tensors (an in-place edit through .data shows at the next call);
    anywhere else (autograd on, train mode, bfloat16, autocast, hooks, a plain nn.BatchNorm) the two
    modules are called as they are."""
    from kconv.runtime import normalization
    from kconv.runtime.normalization import conv_bn

    torch.manual_seed(0)
    conv = eval(conv, {"nn": nn})
    bn = eval(bn, vars(normalization))
    if layout is not torch.contiguous_format:
        conv.to(memory_format=layout)
    with torch.no_grad():
        for p in ("weight", "bias", "running_mean"):
            getattr(bn, p).normal_()
        bn.running_var.uniform_(0.5, 2.0)
    bn.eval()
    x = torch.randn(shape).contiguous(memory_format=layout)
    calls = []
    real = bn.forward
    bn.forward = lambda t: (calls.append("bn"), real(t))[1]

    def called(x=x):
        calls.clear()
        out = conv_bn(conv, bn, x)
        return out, calls == ["bn"]

    with torch.no_grad():
        want = bn(conv(x))
        got, unfolded = called()
        assert not unfolded
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        bn.weight.data.mul_(2)  # no version bump, same data_ptr: nothing may be cached
        conv.weight.data.add_(0.5)
        torch.testing.assert_close(called()[0], bn(conv(x)), rtol=1e-5, atol=1e-5)
        # vmap and forward-mode AD go through the folded path too
        got = torch.vmap(lambda t: conv_bn(conv, bn, t))(torch.stack([x, 2 * x]))
        torch.testing.assert_close(got, torch.stack([bn(conv(x)), bn(conv(2 * x))]), rtol=1e-5, atol=1e-5)
        with fwAD.dual_level():
            tangent = fwAD.unpack_dual(conv_bn(conv, bn, fwAD.make_dual(x, torch.ones_like(x)))).tangent
        linear = bn(conv(torch.ones_like(x))) - bn(conv(torch.zeros_like(x)))  # conv_bn is affine in x
        torch.testing.assert_close(tangent, linear, rtol=1e-5, atol=1e-5)

    y = x.clone().requires_grad_()
    out, unfolded = called(y)  # autograd on: the modules as they are, differentiable
    assert unfolded and torch.equal(out, bn(conv(y)))
    out.sum().backward()
    assert y.grad is not None and conv.weight.grad is not None
    with torch.no_grad():
        assert called(x)[1] is False
        with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 x, bfloat16 convolution output
            out, unfolded = called()
            assert unfolded and out.dtype == torch.bfloat16
        handle = conv.register_forward_hook(lambda m, args, out: calls.append("hook"))
        calls.clear()
        conv_bn(conv, bn, x)
        assert calls == ["hook", "bn"]  # a hook on either module: both called, the hook fires
        handle.remove()
        bn.train()
        assert called()[1] is not bn.frozen  # a frozen BatchNorm uses its running statistics in train mode
        bn.eval()
        plain = getattr(nn, type(bn).__name__.replace("Keras", ""))(4).eval()
        torch.testing.assert_close(conv_bn(conv, plain, x), plain(conv(x)))  # not kconv's: called as it is
        conv.bfloat16(), bn.bfloat16()
        out, unfolded = called(x.bfloat16())  # torch's kernel computes bfloat16 BatchNorm in float32
        assert unfolded and out.dtype == torch.bfloat16
