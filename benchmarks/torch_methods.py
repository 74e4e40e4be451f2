"""PyTorch side of the side-by-side benchmark: the same models, α four ways.

Needs the `bench` extra (`pip install -e .[bench]`, CPU torch 2.13.0,
backpack-for-pytorch, opacus). Used by `bench_side_by_side` and the
`bench_torch` command. Models are the twins of `coherence_jax.models.CNN`
(NCHW here, NHWC there) and `coherence_jax.models.ResNet18GN`; `cnn_from_jax`
copies JAX CNN weights.

Methods (per-example gradient g_i of the per-example loss ℓ_i;
α = ‖Σ g_i‖² / (B Σ ‖g_i‖²)):
  plain     mean loss, `.backward()`.
  vmap      torch.func.vmap(grad) over examples, then S and Q.
  opacus    GradSampleModule hooks fill p.grad_sample [B, ...]; S and Q from it.
  backpack  extend(model), extend(CrossEntropyLoss(reduction='sum')),
            BatchL2Grad: Q = Σ_params batch_l2, S = p.grad (sum reduction).

Example:
  >>> model, x, y = problem('cnn', 128)
  >>> alpha = make_case('torch alpha vmap (torch.func)', model, x, y)()
"""

import copy
import os
import warnings
from typing import Callable, Dict

import numpy as np
import torch
from torch import nn

from benchmarks import harness

warnings.filterwarnings('ignore')

TORCH_METHODS = ('torch plain grad', 'torch alpha vmap (torch.func)',
                 'torch alpha opacus', 'torch alpha backpack')


# ----------------------------------------------------------------- models ----

class CNN(nn.Module):
  """Twin of coherence_jax.models.CNN: 421,642 params on 1x28x28 (NCHW)."""

  def __init__(self, num_classes=10, in_channels=1, image_size=28):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
    self.relu1 = nn.ReLU()
    self.pool1 = nn.MaxPool2d(2)
    self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
    self.relu2 = nn.ReLU()
    self.pool2 = nn.MaxPool2d(2)
    self.flatten = nn.Flatten()
    self.dense1 = nn.Linear((image_size // 4) ** 2 * 64, 128)
    self.relu3 = nn.ReLU()
    self.dense2 = nn.Linear(128, num_classes)

  def forward(self, x):
    x = self.pool1(self.relu1(self.conv1(x)))
    x = self.pool2(self.relu2(self.conv2(x)))
    return self.dense2(self.relu3(self.dense1(self.flatten(x))))


class BasicBlock(nn.Module):

  def __init__(self, cin, cout, stride, groups):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.norm1 = nn.GroupNorm(groups, cout)
    self.relu1 = nn.ReLU()
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.norm2 = nn.GroupNorm(groups, cout)
    self.relu2 = nn.ReLU()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.GroupNorm(groups, cout))
    else:
      self.shortcut = nn.Identity()

  def forward(self, x):
    y = self.relu1(self.norm1(self.conv1(x)))
    y = self.norm2(self.conv2(y))
    return self.relu2(self.shortcut(x) + y)


class ResNet18GN(nn.Module):
  """Twin of coherence_jax.models.ResNet18GN: 11,173,962 params (NCHW)."""

  def __init__(self, num_classes=10, in_channels=3, groups=32):
    super().__init__()
    widths = (64, 128, 256, 512)
    self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                              nn.GroupNorm(groups, 64), nn.ReLU())
    blocks, cin = [], 64
    for stage, width in enumerate(widths):
      for i in range(2):
        blocks.append(BasicBlock(cin, width, 2 if stage and not i else 1,
                                 groups))
        cin = width
    self.blocks = nn.Sequential(*blocks)
    self.pool = nn.AdaptiveAvgPool2d(1)
    self.flatten = nn.Flatten()
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    return self.head(self.flatten(self.pool(self.blocks(self.stem(x)))))


MODELS = {'cnn': (CNN, (1, 28, 28)), 'resnet18gn': (ResNet18GN, (3, 32, 32))}


def num_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def cnn_from_jax(params) -> CNN:
  """A torch CNN holding the weights of a JAX CNN's `from_nnx` params dict.

  Conv kernels HWIO -> OIHW; Dense kernels [in, out] -> [out, in]; dense1's
  input rows are reordered from the NHWC flatten (h, w, c) to NCHW (c, h, w).
  """
  t = lambda a: torch.from_numpy(np.array(a, np.float32))
  model = CNN()
  sd = {}
  for name in ('conv1', 'conv2'):
    sd[f'{name}.weight'] = t(params[name]['kernel']).permute(3, 2, 0, 1)
    sd[f'{name}.bias'] = t(params[name]['bias'])
  k1 = np.asarray(params['dense1']['kernel'])          # [(h, w, c), out]
  side = int(round((k1.shape[0] // 64) ** 0.5))
  k1 = k1.reshape(side, side, 64, -1).transpose(2, 0, 1, 3).reshape(
      k1.shape[0], -1)                                  # [(c, h, w), out]
  sd['dense1.weight'] = t(k1).T.contiguous()
  sd['dense1.bias'] = t(params['dense1']['bias'])
  sd['dense2.weight'] = t(params['dense2']['kernel']).T.contiguous()
  sd['dense2.bias'] = t(params['dense2']['bias'])
  model.load_state_dict({k: v.contiguous() for k, v in sd.items()})
  return model


# 'cpu' here; gpu.sh sets BENCH_TORCH_DEVICE=cuda.
DEVICE = os.environ.get('BENCH_TORCH_DEVICE', 'cpu')


def sync():
  if DEVICE.startswith('cuda'):
    torch.cuda.synchronize()


def problem(model_name: str, batch_size: int, seed: int = 0):
  torch.manual_seed(seed)
  cls, shape = MODELS[model_name]
  model = cls().to(DEVICE)
  x = torch.rand(batch_size, *shape, device=DEVICE)
  y = torch.randint(0, 10, (batch_size,), device=DEVICE)
  return model, x, y


# ---------------------------------------------------------------- methods ----

def _alpha(s_sq: torch.Tensor, q: torch.Tensor, m: int) -> torch.Tensor:
  return s_sq / (m * q)


def plain_fn(model, x, y) -> Callable[[], torch.Tensor]:
  loss_fn = nn.CrossEntropyLoss()
  def run():
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    return next(model.parameters()).grad
  return run


def vmap_stats(model, x, y):
  """(‖S‖², Q) from torch.func per-example gradients."""
  from torch.func import functional_call, grad, vmap  # pylint: disable=g-import-not-at-top
  params = {k: v.detach() for k, v in model.named_parameters()}
  def loss_one(p, xi, yi):
    out = functional_call(model, p, (xi.unsqueeze(0),))
    return nn.functional.cross_entropy(out, yi.unsqueeze(0))
  g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
  s_sq = sum((v.sum(0) ** 2).sum() for v in g.values())
  q = sum((v ** 2).sum() for v in g.values())
  return s_sq, q


def vmap_fn(model, x, y):
  def run():
    s_sq, q = vmap_stats(model, x, y)
    return _alpha(s_sq, q, x.shape[0])
  return run


def opacus_stats(gsm, x, y):
  gsm.zero_grad(set_to_none=True)
  for p in gsm.parameters():
    p.grad_sample = None
  nn.functional.cross_entropy(gsm(x), y, reduction='sum').backward()
  s_sq = q = 0.0
  for p in gsm.parameters():
    gs = p.grad_sample
    s_sq = s_sq + (gs.sum(0) ** 2).sum()
    q = q + (gs ** 2).sum()
  return s_sq, q


def opacus_fn(model, x, y):
  from opacus import GradSampleModule  # pylint: disable=g-import-not-at-top
  gsm = GradSampleModule(model, loss_reduction='sum')
  def run():
    s_sq, q = opacus_stats(gsm, x, y)
    return _alpha(s_sq, q, x.shape[0])
  return run


def backpack_stats(ext_model, ext_loss, x, y):
  from backpack import backpack  # pylint: disable=g-import-not-at-top
  from backpack.extensions import BatchL2Grad  # pylint: disable=g-import-not-at-top
  ext_model.zero_grad(set_to_none=True)
  with backpack(BatchL2Grad()):
    ext_loss(ext_model(x), y).backward()
  s_sq = q = 0.0
  for p in ext_model.parameters():
    s_sq = s_sq + (p.grad ** 2).sum()
    q = q + p.batch_l2.sum()
  return s_sq, q


def backpack_extend(model):
  from backpack import extend  # pylint: disable=g-import-not-at-top
  use_converter = not isinstance(model, CNN)  # residual adds need torch.fx
  ext_model = extend(model, use_converter=use_converter)
  ext_loss = extend(nn.CrossEntropyLoss(reduction='sum'))
  return ext_model, ext_loss


class Unsupported(Exception):
  """A method that cannot handle a model (reported as such in the table)."""


def backpack_fn(model, x, y):
  if any(isinstance(m, nn.GroupNorm) for m in model.modules()):
    raise Unsupported('BackPACK 1.7.1 BatchL2Grad has no GroupNorm extension '
                      '(its params get no batch_l2)')
  ext_model, ext_loss = backpack_extend(model)
  def run():
    s_sq, q = backpack_stats(ext_model, ext_loss, x, y)
    return _alpha(s_sq, q, x.shape[0])
  return run


def make_case(name: str, model, x, y) -> Callable[[], torch.Tensor]:
  """A fresh model copy per method: opacus and backpack modify theirs."""
  model = copy.deepcopy(model)
  fn = {'torch plain grad': plain_fn,
        'torch alpha vmap (torch.func)': vmap_fn,
        'torch alpha opacus': opacus_fn,
        'torch alpha backpack': backpack_fn}[name](model, x, y)
  def synced():
    out = fn()
    sync()
    return out
  return synced


def time_interleaved(fns: Dict[str, Callable], reps: int, warmup: int = 1):
  """harness.time_interleaved for torch cases (each synchronises itself)."""
  return harness.time_interleaved(fns, reps, warmup, sync=lambda out: out)
