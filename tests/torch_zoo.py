"""PyTorch reference models for the import tests (needs torch).

Layer for layer RepDistiller's zoo (models/resnet.py, wrn.py, vgg.py,
mobilenetv2.py, ShuffleNetv1.py, ShuffleNetv2.py: same module names, so the
same state-dict keys) and torchvision's ImageNet ResNets, written from their
descriptions. Forward passes return logits only (no feature lists), and the
pooling is a global mean, which is what the zoo's fixed-size average pools
compute on 32x32 input.
"""

import torch
from torch import nn
import torch.nn.functional as F


def _conv(cin, cout, k, stride=1, groups=1, bias=False):
  return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)


def _pool(x):
  return x.mean((2, 3))


def _shuffle(x, groups):
  n, c, h, w = x.shape
  return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(
      n, c, h, w)


# RepDistiller models/resnet.py (basic blocks) and torchvision's ResNets.


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = _conv(cin, planes, 3, stride)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = _conv(planes, planes, 3)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = _conv(cin, planes, 1)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = _conv(planes, planes, 3, stride)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = _conv(planes, planes * 4, 1)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _make_layer(block, cin, planes, blocks, stride):
  cout = planes * block.expansion
  downsample = None
  if stride != 1 or cin != cout:
    downsample = nn.Sequential(_conv(cin, cout, 1, stride),
                               nn.BatchNorm2d(cout))
  layers = [block(cin, planes, stride, downsample)]
  layers += [block(cout, planes) for _ in range(1, blocks)]
  return nn.Sequential(*layers), cout


class CifarResNet(nn.Module):
  """RepDistiller's ResNet: conv3x3 stem, 3 stages of (depth - 2) / 6."""

  def __init__(self, depth, filters, num_classes):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1 = _conv(3, filters[0], 3)
    self.bn1 = nn.BatchNorm2d(filters[0])
    c = filters[0]
    self.layer1, c = _make_layer(BasicBlock, c, filters[1], n, 1)
    self.layer2, c = _make_layer(BasicBlock, c, filters[2], n, 2)
    self.layer3, c = _make_layer(BasicBlock, c, filters[3], n, 2)
    self.fc = nn.Linear(c, num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layer3(self.layer2(self.layer1(x)))
    return self.fc(_pool(x))


class ImageNetResNet(nn.Module):
  """torchvision's ResNet (v1.5: stride on the 3x3 conv of a bottleneck)."""

  def __init__(self, block, sizes, num_classes):
    super().__init__()
    self.conv1 = _conv(3, 64, 7, 2)
    self.bn1 = nn.BatchNorm2d(64)
    c = 64
    for s, n in enumerate(sizes, 1):
      layer, c = _make_layer(block, c, 64 * 2**(s - 1), n, 1 if s == 1 else 2)
      setattr(self, f'layer{s}', layer)
    self.fc = nn.Linear(c, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(_pool(x))


# RepDistiller models/wrn.py.


class WRNBlock(nn.Module):
  """Pre-activation block; with a channel change the shortcut is a 1x1 conv
  of the pre-activated input."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(cin)
    self.conv1 = _conv(cin, cout, 3, stride)
    self.bn2 = nn.BatchNorm2d(cout)
    self.conv2 = _conv(cout, cout, 3)
    self.equal = cin == cout
    self.convShortcut = None if self.equal else _conv(cin, cout, 1, stride)  # pylint: disable=invalid-name

  def forward(self, x):
    y = F.relu(self.bn1(x))
    shortcut = x if self.equal else self.convShortcut(y)
    y = self.conv2(F.relu(self.bn2(self.conv1(y))))
    return y + shortcut


class WRNStage(nn.Module):

  def __init__(self, n, cin, cout, stride):
    super().__init__()
    self.layer = nn.Sequential(*[
        WRNBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
        for i in range(n)])

  def forward(self, x):
    return self.layer(x)


class WideResNet(nn.Module):

  def __init__(self, depth, widen, num_classes):
    super().__init__()
    n = (depth - 4) // 6
    c = [16, 16 * widen, 32 * widen, 64 * widen]
    self.conv1 = _conv(3, c[0], 3)
    self.block1 = WRNStage(n, c[0], c[1], 1)
    self.block2 = WRNStage(n, c[1], c[2], 2)
    self.block3 = WRNStage(n, c[2], c[3], 2)
    self.bn1 = nn.BatchNorm2d(c[3])
    self.fc = nn.Linear(c[3], num_classes)

  def forward(self, x):
    x = self.block3(self.block2(self.block1(self.conv1(x))))
    return self.fc(_pool(F.relu(self.bn1(x))))


# RepDistiller models/vgg.py (the _bn variants).


class VGG(nn.Module):
  """Five blocks of conv3x3(bias)-BN-ReLU (the last ReLU of each block is
  applied in forward); max-pools after blocks 0-2 (and 3 for 64-pixel input)."""

  def __init__(self, cfg, num_classes):
    super().__init__()
    cin = 3
    for s, widths in enumerate(cfg):
      layers = []
      for w in widths:
        layers += [_conv(cin, w, 3, bias=True), nn.BatchNorm2d(w),
                   nn.ReLU()]
        cin = w
      setattr(self, f'block{s}', nn.Sequential(*layers[:-1]))
    self.classifier = nn.Linear(512, num_classes)

  def forward(self, x):
    h = x.shape[2]
    for s in range(5):
      x = F.relu(getattr(self, f'block{s}')(x))
      if s < 3 or (s == 3 and h == 64):
        x = F.max_pool2d(x, 2, 2)
    return self.classifier(_pool(x))


# RepDistiller models/mobilenetv2.py (mobile_half: expansion 6, width 0.5).


class InvertedResidual(nn.Module):

  def __init__(self, cin, cout, stride, t):
    super().__init__()
    hidden = cin * t
    self.residual = stride == 1 and cin == cout
    self.conv = nn.Sequential(
        _conv(cin, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
        _conv(hidden, hidden, 3, stride, groups=hidden),
        nn.BatchNorm2d(hidden), nn.ReLU(),
        _conv(hidden, cout, 1), nn.BatchNorm2d(cout))

  def forward(self, x):
    return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):

  def __init__(self, num_classes, t=6, width=0.5):
    super().__init__()
    groups = [(1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2),
              (t, 96, 3, 1), (t, 160, 3, 2), (t, 320, 1, 1)]
    c = int(32 * width)
    self.conv1 = nn.Sequential(_conv(3, c, 3, 2), nn.BatchNorm2d(c),
                               nn.ReLU())
    self.blocks = nn.ModuleList()
    for gt, gc, n, s in groups:
      layers = []
      for i in range(n):
        layers.append(InvertedResidual(c, int(gc * width), s if i == 0 else 1,
                                       gt))
        c = int(gc * width)
      self.blocks.append(nn.Sequential(*layers))
    self.conv2 = nn.Sequential(_conv(c, 1280, 1), nn.BatchNorm2d(1280),
                               nn.ReLU())
    self.classifier = nn.Sequential(nn.Linear(1280, num_classes))

  def forward(self, x):
    x = self.conv1(x)
    for block in self.blocks:
      x = block(x)
    return self.classifier(_pool(self.conv2(x)))


# RepDistiller models/ShuffleNetv1.py (ShuffleV1: groups 3).


class ShuffleV1Block(nn.Module):

  def __init__(self, cin, cout, stride, groups):
    super().__init__()
    mid = cout // 4
    self.g = 1 if cin == 24 else groups
    self.stride = stride
    self.conv1 = _conv(cin, mid, 1, groups=self.g)
    self.bn1 = nn.BatchNorm2d(mid)
    self.conv2 = _conv(mid, mid, 3, stride, groups=mid)
    self.bn2 = nn.BatchNorm2d(mid)
    self.conv3 = _conv(mid, cout, 1, groups=groups)
    self.bn3 = nn.BatchNorm2d(cout)

  def forward(self, x):
    out = _shuffle(F.relu(self.bn1(self.conv1(x))), self.g)
    out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
    if self.stride == 2:
      return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
    return F.relu(out + x)


class ShuffleNetV1(nn.Module):

  def __init__(self, num_classes, planes=(240, 480, 960), blocks=(4, 8, 4),
               groups=3):
    super().__init__()
    self.conv1 = _conv(3, 24, 1)
    self.bn1 = nn.BatchNorm2d(24)
    c = 24
    for s in range(3):
      layers = []
      for i in range(blocks[s]):
        layers.append(ShuffleV1Block(
            c, planes[s] - (c if i == 0 else 0), 2 if i == 0 else 1, groups))
        c = planes[s]
      setattr(self, f'layer{s + 1}', nn.Sequential(*layers))
    self.linear = nn.Linear(c, num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layer3(self.layer2(self.layer1(x)))
    return self.linear(_pool(x))


# RepDistiller models/ShuffleNetv2.py (ShuffleV2: net size 1).


class ShuffleV2Block(nn.Module):

  def __init__(self, channels):
    super().__init__()
    c = channels // 2
    self.conv1 = _conv(c, c, 1)
    self.bn1 = nn.BatchNorm2d(c)
    self.conv2 = _conv(c, c, 3, groups=c)
    self.bn2 = nn.BatchNorm2d(c)
    self.conv3 = _conv(c, c, 1)
    self.bn3 = nn.BatchNorm2d(c)

  def forward(self, x):
    c = x.shape[1] // 2
    x1, x2 = x[:, :c], x[:, c:]
    out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))
    out = F.relu(self.bn3(self.conv3(out)))
    return _shuffle(torch.cat([x1, out], 1), 2)


class ShuffleV2Down(nn.Module):

  def __init__(self, cin, cout):
    super().__init__()
    mid = cout // 2
    self.conv1 = _conv(cin, cin, 3, 2, groups=cin)
    self.bn1 = nn.BatchNorm2d(cin)
    self.conv2 = _conv(cin, mid, 1)
    self.bn2 = nn.BatchNorm2d(mid)
    self.conv3 = _conv(cin, mid, 1)
    self.bn3 = nn.BatchNorm2d(mid)
    self.conv4 = _conv(mid, mid, 3, 2, groups=mid)
    self.bn4 = nn.BatchNorm2d(mid)
    self.conv5 = _conv(mid, mid, 1)
    self.bn5 = nn.BatchNorm2d(mid)

  def forward(self, x):
    left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
    right = F.relu(self.bn3(self.conv3(x)))
    right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
    return _shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):

  def __init__(self, num_classes, channels=(116, 232, 464, 1024),
               blocks=(3, 7, 3)):
    super().__init__()
    self.conv1 = _conv(3, 24, 1)
    self.bn1 = nn.BatchNorm2d(24)
    c = 24
    for s in range(3):
      layers = [ShuffleV2Down(c, channels[s])]
      layers += [ShuffleV2Block(channels[s]) for _ in range(blocks[s])]
      c = channels[s]
      setattr(self, f'layer{s + 1}', nn.Sequential(*layers))
    self.conv2 = _conv(c, channels[3], 1)
    self.bn2 = nn.BatchNorm2d(channels[3])
    self.linear = nn.Linear(channels[3], num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layer3(self.layer2(self.layer1(x)))
    return self.linear(_pool(F.relu(self.bn2(self.conv2(x)))))


_VGG8 = ((64,), (128,), (256,), (512,), (512,))

MODELS = {
    'resnet8': lambda k: CifarResNet(8, (16, 16, 32, 64), k),
    'resnet20': lambda k: CifarResNet(20, (16, 16, 32, 64), k),
    'resnet8x4': lambda k: CifarResNet(8, (32, 64, 128, 256), k),
    'wrn_16_1': lambda k: WideResNet(16, 1, k),
    'wrn_16_2': lambda k: WideResNet(16, 2, k),
    'wrn_40_1': lambda k: WideResNet(40, 1, k),
    'wrn_40_2': lambda k: WideResNet(40, 2, k),
    'vgg8': lambda k: VGG(_VGG8, k),
    'MobileNetV2': MobileNetV2,
    'ShuffleV1': ShuffleNetV1,
    'ShuffleV2': ShuffleNetV2,
    'resnet18': lambda k: ImageNetResNet(BasicBlock, (2, 2, 2, 2), k),
    'resnet34': lambda k: ImageNetResNet(BasicBlock, (3, 4, 6, 3), k),
    'resnet50': lambda k: ImageNetResNet(Bottleneck, (3, 4, 6, 3), k),
}


def create(name: str, num_classes: int) -> nn.Module:
  return MODELS[name](num_classes)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights and BN running statistics, so that eval mode is
  non-trivial: kernels N(0, 1/fan_in), BN scales 1 + 0.2 N, biases and
  running means 0.2 N, running variances U(0.5, 2)."""
  gen = torch.Generator().manual_seed(seed)

  def normal(t, std, mean=0.0):
    t.copy_(mean + std * torch.randn(t.shape, generator=gen))

  for module in model.modules():
    if isinstance(module, (nn.Conv2d, nn.Linear)):
      normal(module.weight, module.weight[0].numel()**-0.5)
      if module.bias is not None:
        normal(module.bias, 0.2)
    elif isinstance(module, nn.BatchNorm2d):
      normal(module.weight, 0.2, 1.0)
      normal(module.bias, 0.2)
      normal(module.running_mean, 0.2)
      module.running_var.copy_(
          0.5 + 1.5 * torch.rand(module.running_var.shape, generator=gen))
      module.num_batches_tracked.fill_(1234)
  return model.eval()
