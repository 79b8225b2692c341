"""The weight-stationary persistent conv (``kernels/conv2d_persistent.py``): every case under the
interpreter (a subprocess, see ``_interp_persistent.py``). Its sm_90 compile and the static model
are checked in ``test_gpu_static.py``."""
from _interp_utils import run_in_interpreter


def test_persistent_conv_under_the_interpreter():
    run_in_interpreter("_interp_persistent.py")
