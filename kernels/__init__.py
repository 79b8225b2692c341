"""Triton kernels of the fast student (``csd_fast.kernels``), registered as ``torch.ops.csd_fast.*``.

Set ``TRITON_INTERPRET=1`` *before* importing this package to run them on CPU tensors.
"""
from .channel_attention import ca_residual, ca_residual_nhwc
from .conv2d import conv2d, conv2d_nhwc, pack_conv_bias, pack_conv_weight
from .utils import interpreting

__all__ = ["conv2d", "conv2d_nhwc", "pack_conv_weight", "pack_conv_bias", "ca_residual", "ca_residual_nhwc", "interpreting"]
