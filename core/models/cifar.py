"""CIFAR architectures: Wide ResNet (Zagoruyko & Komodakis 2016), VGG with BatchNorm (Simonyan &
Zisserman 2015), ResNet-20 (He et al. 2016, CIFAR variant) and ResNet-18 with a 3x3 stem."""

from __future__ import annotations

from torch import Tensor, nn


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]


class PreActBlock(nn.Module):
    """WRN block: BN-ReLU-conv3x3, BN-ReLU-conv3x3, with a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(x).relu()
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        return self.conv2(self.bn2(out).relu()) + skip


class BasicBlock(nn.Module):
    """Post-activation ResNet block with a 1x1 conv + BN projection shortcut when needed."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, stride), nn.ReLU(), *_conv_bn(cout, cout))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: Tensor) -> Tensor:
        return (self.body(x) + self.shortcut(x)).relu()


def _stages(block: type[nn.Module], widths: list[int], blocks: int, cin: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        for j in range(blocks):
            layers.append(block(cin, width, 2 if (i > 0 and j == 0) else 1))
            cin = width
    return layers


def wrn(depth: int = 28, width: int = 2, num_classes: int = 10) -> nn.Module:
    """WRN-depth-width; depth = 6n + 4."""
    if (depth - 4) % 6:
        raise ValueError("WRN depth must be 6n + 4 (e.g. 16, 22, 28, 40)")
    widths = [16 * width, 32 * width, 64 * width]
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False),
                         *_stages(PreActBlock, widths, (depth - 4) // 6, 16),
                         nn.BatchNorm2d(widths[-1]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(widths[-1], num_classes))


def resnet20(num_classes: int = 10, width: int = 16) -> nn.Module:
    """ResNet-20 for CIFAR: three stages of three basic blocks, widths 16/32/64."""
    widths = [width, 2 * width, 4 * width]
    return nn.Sequential(*_conv_bn(3, width), nn.ReLU(), *_stages(BasicBlock, widths, 3, width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_classes))


def resnet18(num_classes: int = 10) -> nn.Module:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool, the usual CIFAR adaptation."""
    widths = [64, 128, 256, 512]
    return nn.Sequential(*_conv_bn(3, 64), nn.ReLU(), *_stages(BasicBlock, widths, 2, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))


_VGG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


def vgg(depth: int = 19, num_classes: int = 10) -> nn.Module:
    """VGG-11/13/16/19 with BatchNorm after every convolution and one linear classifier (CIFAR)."""
    if depth not in _VGG:
        raise ValueError(f"VGG depth must be one of {sorted(_VGG)}")
    layers: list[nn.Module] = []
    cin = 3
    for item in _VGG[depth]:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [*_conv_bn(cin, int(item)), nn.ReLU()]
            cin = int(item)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, num_classes))
