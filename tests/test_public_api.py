"""Every public name resolves, and the design card's example runs end to end on tiny sizes."""
import warnings

import torch

import csd_fast


def test_every_public_name_resolves():
    for name in csd_fast.__all__:
        assert getattr(csd_fast, name) is not None, name


def test_design_card_example_runs():
    from csd_fast import CSDTrainer, SlimEDSR, accelerate
    from helpers import PairSet

    model = SlimEDSR(scale=2, n_feats=16, n_resblocks=2, res_scale=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-VGG warning
        trainer = CSDTrainer(model, width=0.25, neg_num=2, progress=False)
    trainer.fit(PairSet(n=4, size=16), steps=1, batch_size=2, val_set=[PairSet()[0]])
    student = model.export(width=0.25)
    fast = accelerate(student)
    lr = torch.rand(1, 3, 5, 7)
    sr = fast(lr)
    assert sr.shape == (1, 3, 10, 14)
    torch.testing.assert_close(sr, student(lr).clamp(0, 1), atol=1e-4, rtol=0)
