"""Seeds and determinism: `--seed` plus `--deterministic` make two runs of a step give the same numbers."""
import os
import random


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and TensorFlow (via Keras); with `deterministic`, also make TensorFlow's ops
    deterministic (slower, and mixed precision is off then). Call before building any model or dataset."""
    import keras
    import numpy as np
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
