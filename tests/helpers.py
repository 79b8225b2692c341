"""Small shared test fixtures: a tiny feature encoder and a tiny paired dataset."""
import torch
import torch.nn.functional as F
from torch import nn


class TinyEncoder(nn.Module):
    """Two feature maps (full and half resolution), counting how many images it encodes."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w1 = nn.Parameter(torch.randn(4, 3, 3, 3, generator=g) * 0.3)
        self.w2 = nn.Parameter(torch.randn(6, 4, 3, 3, generator=g) * 0.3)
        self.images_seen = 0

    def forward(self, x):
        self.images_seen += x.shape[0]
        f1 = F.relu(F.conv2d(x, self.w1, padding=1))
        f2 = F.relu(F.conv2d(F.avg_pool2d(f1, 2), self.w2, padding=1))
        return [f1, f2]


class PairSet:
    """``n`` random HR images of side ``size`` with LR by 2x average pooling."""

    def __init__(self, n=8, size=16, scale=2):
        self.hr = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(2))
        self.scale = scale

    def __len__(self):
        return len(self.hr)

    def __getitem__(self, i):
        hr = self.hr[i]
        return F.avg_pool2d(hr[None], self.scale)[0], hr
