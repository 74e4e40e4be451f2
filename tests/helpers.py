"""Small shared fixtures for the tests: tiny models and batches.

Each is one compiled program (model init, batch sampling, the reference
gradient): run eagerly, every op would compile on its own, and those small
compiles were most of the default tier's time.
"""

import functools
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
import pytest

import coherence_jax as cj


def tiny_mlp(widths=(12, 8, 3), seed=0):
  """(loss_fn, params) of a small MLP with cross-entropy."""
  model = nnx.jit(lambda: cj.models.MLP(list(widths), rngs=nnx.Rngs(seed)))()
  return cj.from_nnx(model, cj.models.cross_entropy_loss)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _sample_batch(size, dim, classes, seed):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {'image': jax.random.normal(k1, (size, dim)),
          'label': jax.random.randint(k2, (size,), 0, classes)}


def tiny_batch(size, dim=12, classes=3, seed=1):
  """{'image': float32 [size, dim] normal, 'label': int32 [size]}."""
  return _sample_batch(size, dim, classes, seed)


def loop_grads(loss_fn, params, batch):
  """Reference: a Python loop of jax.grad over single examples, stacked.

  The slicing is numpy's and the gradient of one example one compiled
  program, called once per example.
  """
  host = jax.tree.map(np.asarray, batch)
  size = jax.tree.leaves(host)[0].shape[0]
  grad_one = jax.jit(jax.grad(lambda p, example: loss_fn(p, example)[0]))
  grads = [grad_one(params, jax.tree.map(lambda x: x[i:i + 1], host))
           for i in range(size)]
  return jax.tree.map(lambda *g: jnp.asarray(np.stack(g)), *grads)


def experiment_config_modules():
  """A pytest.param per experiments/*/configs/*.py module (its import name),
  with id '<experiment>/<config>'."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for path in sorted(glob.glob(os.path.join(root, 'experiments', '*',
                                            'configs', '*.py'))):
    name = os.path.basename(path)[:-3]
    if name == '__init__':
      continue
    experiment = path.split(os.sep)[-3]
    yield pytest.param(f'experiments.{experiment}.configs.{name}',
                       id=f'{experiment}/{name}')
