"""WRN-50-2 for ImageNet (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

The ImageNet WRN-50-2 is a ResNet-50 whose bottleneck 3x3 convolutions are twice as wide
(research notes, 23 Nov 2018: "a ResNet-50, but with all channels doubled" inside the
bottleneck) - exactly torchvision's ``wide_resnet50_2``, which we build (68,883,240
parameters for 1000 classes). Pretrained weights come only from a local file in
torchvision's state-dict format; nothing is ever downloaded. Its 1x1 projection
shortcuts are torchvision's ``downsample`` modules.
"""

from __future__ import annotations

import torch.nn as nn

from .registry import register_model

TAP_NAMES = ("layer1", "layer2", "layer3", "layer4")


@register_model("wrn50_2")
def wrn50_2(num_classes: int = 1000, in_channels: int = 3, weights_path: str | None = None) -> nn.Module:
    """torchvision's ``wide_resnet50_2`` (random init, or ``weights_path``: a local state dict).

    Attention-transfer taps: the output of each stage, ``layer1`` .. ``layer4``
    (256, 512, 1024, 2048 channels at H/4 .. H/32).
    """
    from torchvision.models import wide_resnet50_2  # lazy: torchvision is slow to import

    model = wide_resnet50_2(weights=None, num_classes=num_classes)
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                                padding=old.padding, bias=False)
    model.tap_names = TAP_NAMES
    if weights_path is not None:
        from ..distill import load_weights

        # On the meta device (counting, budget solving) there is nothing to fill: only
        # check that the file is there, without reading its 270 MB.
        load_weights(model, weights_path, what="WRN-50-2 weights",
                     check_only=next(model.parameters()).is_meta)
    return model
