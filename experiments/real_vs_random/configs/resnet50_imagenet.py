r"""Real vs random labels, full size: ResNet-50 on ImageNet, m = 50,000 (2203.10036 §6).

  python -m experiments.real_vs_random.main \
      --config=experiments/real_vs_random/configs/resnet50_imagenet.py \
      --config.data.data_dir=/path/to/tensorflow_datasets \
      --workdir=/path/to/rvr_resnet50

(One GPU node or one TPU host as above; a Cloud TPU pod slice or SLURM:
the same on every host with --distributed=auto, see launch/README.md. The
data_dir holds the tfds imagenet2012 array_record files, see below.)

m-coherence of a FIXED sample of the first 50,000 training examples (with
the run's labels), whole network and per module (107: every conv and norm
layer, e.g. stem_conv, blocks/0/conv1, and the head), for real labels and
for 100 % uniformly random labels; training accuracy on 50,000 fixed
training examples, test accuracy on 10,000 validation examples. The data
streams: each process reads only its slice of every batch and of every
2,048-example measurement chunk (decoded, resized to 256 and center-cropped
to 224 in grain threads; no augmentation), so host memory per process is a
few GB whatever the dataset size (experiments/common/examples.py). Measured
every step for the first ~10 steps, then at steps 1.1x apart (~120
measurements per mode).

ResNet-50 with GroupNorm (32 groups) in place of BatchNorm
(config.model.norm='auto'): the trainer runs the model in inference mode,
where BatchNorm would never normalize (nets.resolve_norm);
GroupNorm keeps every example independent, so per-example gradients are
exact. SGD with momentum 0.9, lr 0.1 at batch 256 (Goyal et al.'s linear
rule; scale both together on larger meshes), 90 epochs, no weight decay, no
schedule: this project's choices, not the paper's.

The data: tfds imagenet2012 cannot be downloaded by tfds. Put
ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in tfds' manual_dir,
then on a machine with disk `tfds build imagenet2012 --data_dir=DIR
--manual_dir=MANUAL_DIR --file_format=array_record` and pass
--config.data.data_dir=DIR (a missing dataset fails at once saying so).
Fields as in default.py, plus data.{data_dir, image_size, num_threads},
model.{name, norm}, train.momentum and measure.{eval_size, test_eval_size,
chunk_size}.
"""

import ml_collections

from experiments.common import data
from experiments.common import measure
from experiments.real_vs_random.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.experiment = 'real_vs_random'
  config.data = data.config_for('imagenet2012')  # streamed
  config.model = ml_collections.ConfigDict(dict(name='resnet50', widths=(),
                                                norm='auto'))
  config.train = ml_collections.ConfigDict(dict(
      learning_rate=0.1, momentum=0.9, batch_size=256, epochs=90,
      checkpoint_every_epochs=1))
  config.measure = measure.block(
      sample_size=50_000,      # FIXED: the first 50,000 training examples
      microbatch_size=32,      # per device: ~32 x (150 + 22) MiB at 224
      method='auto',
      dense_until=0,           # every step while 1.1x apart is < 1 step ...
      growth=1.1,              # ... then steps 1.1x apart
      eval_size=50_000,        # train accuracy: 50,000 fixed training examples
      test_eval_size=10_000,   # test accuracy: 10,000 validation examples
      chunk_size=2048,         # examples read per measurement chunk
  )
  config.mesh = ml_collections.ConfigDict(dict(data=-1))  # every device
  return config
