"""The per-architecture registry (csd_fast.models.registry) and the backend protocol (csd_fast.backends):
every architecture is one entry, a new one registered in one place works everywhere, and the
plans go through ``res_block`` so a backend can fuse it.

Tolerance: fp32 atol=rtol=1e-5 against the eager model (same ops, same order up to fusions).
"""
import pytest
import torch
from torch import nn

from csd_fast import backends
from csd_fast import fast as fast_module
from csd_fast.convert import detect_format, load_teacher_state
from csd_fast.fast import SUPPORTED_DTYPES, FastStudent, accelerate
from csd_fast.models import PRESETS, Architecture, SlimEDSR, architectures, build_model, get_arch, register_arch
from csd_fast.models import registry
from csd_fast.models.edsr import EDSRPlan
from _interp_utils import assert_close


def _randomized(model):
    for p in model.parameters():
        nn.init.normal_(p, std=0.1)
    return model


def test_each_architecture_is_one_entry():
    assert [a.name for a in architectures()] == ["carn", "carn-csd", "edsr", "rcan"]
    for arch in architectures():
        assert arch.model.arch == arch.name
        assert dict(PRESETS[arch.name]) == dict(arch.presets) and "demo" in arch.presets
        assert SUPPORTED_DTYPES[arch.name] == arch.dtypes
        assert arch.plan is not None and arch.formats
        model = build_model(arch.name, 2, preset="demo")
        assert type(model) is arch.model and model.arch == arch.name


def test_formats_map_to_their_own_architecture():
    """A state dict of each arch's own layout in a foreign format is detected as that arch's format."""
    for arch in architectures():
        names = {f.name for f in arch.formats}
        others = {f.name for a in architectures() if a is not arch for f in a.formats}
        assert names and not names & others
    sd = {"conv_first.weight": torch.zeros(8, 3, 3, 3), "body.0.residual_group.0.rcab.0.weight": torch.zeros(1)}
    assert detect_format(sd) == "basicsr-rcan"
    sd.pop("body.0.residual_group.0.rcab.0.weight")
    assert detect_format(sd) == "basicsr-edsr"


class TinyEDSR(SlimEDSR):
    arch = "tiny-edsr"


def test_a_new_architecture_registered_in_one_place_works_everywhere(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_arch(Architecture("tiny-edsr", TinyEDSR, presets={"t": dict(n_feats=8, n_resblocks=1)},
                               plan=EDSRPlan, dtypes=(torch.float32,)))
    model = _randomized(build_model("tiny-edsr", 2, preset="t"))
    assert model.config["n_feats"] == 8 and SUPPORTED_DTYPES["tiny-edsr"] == (torch.float32,)
    x = torch.rand(1, 3, 5, 6)
    assert_close(accelerate(model)(x), model(x), 1e-5, 1e-5, what="tiny-edsr")
    with pytest.raises(ValueError, match="dtype"):
        accelerate(model, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="already registered"):
        register_arch(Architecture("tiny-edsr", TinyEDSR))
    with pytest.raises(ValueError, match="dtypes"):
        register_arch(Architecture("no-dtypes", TinyEDSR, plan=EDSRPlan))
    with pytest.raises(ValueError, match="name: expected one of"):
        get_arch("srcnn")


class _CountingBackend(backends.EagerBackend):
    """Counts ``res_block`` calls and computes them by its own formula, so a plan that bypassed
    ``res_block`` or passed the wrong arguments would show in the count or the output."""

    name = "counting"
    calls = 0

    def res_block(self, x, conv1, conv2, *, res_scale=1.0, relu_out=False, out=None):
        type(self).calls += 1
        t = torch.relu(torch.nn.functional.conv2d(x, conv1.weight, conv1.bias, padding=1))
        y = x + res_scale * torch.nn.functional.conv2d(t, conv2.weight, conv2.bias, padding=1)
        y = y.relu() if relu_out else y
        return y if out is None else out.copy_(y)


@pytest.mark.parametrize("arch, blocks", [("edsr", 3), ("carn", 9), ("carn-csd", 9)])
def test_plans_run_their_blocks_through_res_block(monkeypatch, arch, blocks):
    monkeypatch.setitem(backends.BACKEND_CLASSES, "counting", _CountingBackend)
    monkeypatch.setattr(fast_module, "BACKENDS", (*fast_module.BACKENDS, "counting"))  # the names accelerate checks
    monkeypatch.setattr(_CountingBackend, "calls", 0)
    over = dict(n_feats=8, n_resblocks=blocks, res_scale=0.3) if arch == "edsr" else dict(n_feats=8)
    model = _randomized(build_model(arch, 2, preset=None, **over)).eval()
    fast = FastStudent(model, torch.float32, "counting", None, 0, False)
    x = torch.rand(2, 3, 6, 5)
    assert_close(fast(x), model(x), 1e-5, 1e-5, what=arch)
    assert _CountingBackend.calls == blocks


def test_default_res_block_is_two_convs():
    """``Backend.res_block`` = ``[relu](x + s * conv2(relu(conv1(x))))``, written into ``out``."""
    ops = backends.EagerBackend(torch.float32, torch.zeros(3))
    c1, c2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 5, 5)
    want = x + 0.5 * c2(torch.relu(c1(x)))
    with torch.no_grad():
        assert_close(ops.res_block(x, ops.pack(c1), ops.pack(c2), res_scale=0.5), want, 1e-5, 1e-5, what="res_block")
        out = torch.empty_like(x)
        ops.res_block(x, ops.pack(c1), ops.pack(c2), res_scale=0.5, relu_out=True, out=out)
    assert_close(out, want.relu(), 1e-5, 1e-5, what="res_block relu_out")


def test_converted_teacher_keys_come_from_the_arch_formats():
    """Round trip through a format declared in the EDSR folder (BasicSR EDSR runs on the 8-bit scale inside,
    as csd_fast models: tensors load unchanged)."""
    model = _randomized(build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=2, res_scale=1.0))
    theirs = {}
    for key, t in model.state_dict().items():
        if key == "mean_shift.mean":
            continue
        key = (key.replace("head.", "conv_first.").replace("body_conv.", "conv_after_body.")
               .replace("upsampler.convs.0.", "upsample.0.").replace("tail.", "conv_last."))
        theirs[key] = t.clone()
    arch, config, sd, fmt = load_teacher_state(theirs)
    assert (arch, fmt, config["n_resblocks"]) == ("edsr", "basicsr-edsr", 2)
    assert_close(sd["body.1.conv2.bias"], model.body[1].conv2.bias, 1e-6, 1e-6, what="bias, unchanged")
