"""One trainer for every image task (score, genres, characters, tags): the head with the backbone frozen, then the
top layers of the backbone fine-tuned at a lower rate, under a tf.distribute strategy.

    strategy = make_strategy("auto")
    model, history = fit(lambda: build(...), train_data, val_data, loss="mse", strategy=strategy, epochs=8, ...)

`build` makes the model inside the strategy's scope (with the optimiser and metrics); a model holding a layer named
"backbone" trains in two phases, a model without one (or `from_scratch`) in one. `train_data(batch_size)` and
`val_data(batch_size)` return batched tf.data datasets of (inputs, targets): the trainer asks for the global batch
(the per-replica batch times the replicas). The frozen phase may train what lies above the backbone on precomputed
backbone features instead of images (`head_data`, see animeml.core.feature_cache and backbones.above_backbone).

Every phase stops early after `patience` epochs without improvement of `monitor`; the best weights over all
phases (the untrained model included) are kept. With `backup_dir`, Keras' BackupAndRestore saves each epoch there,
and `resume=True` continues an interrupted run from its last epoch (finished phases are skipped).
"""
import ctypes
import json
import shutil
from pathlib import Path

import keras
import matplotlib
import numpy as np
import pandas as pd
import tensorflow as tf

from animeml.core.backbones import above_backbone, set_trainable
from animeml.core.io import PipelineError, atomic_path, write_csv, write_json
from animeml.core.trainer_flags import STRATEGIES

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


# A small step (an MLP, a head on cached features) took 15-30 ms, most of it Python between steps; 32 steps per call
# cut the text model's epochs from 3.1 s to 1.5 s on average with the same losses.
STEPS_PER_EXECUTION = 32


def set_seed(seed, deterministic=False):
    """Seed Python, NumPy and TensorFlow; `deterministic` also makes TensorFlow's ops deterministic (slower)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_strategy(name="auto"):
    """A tf.distribute strategy: `auto` mirrors over the GPUs when there are several, else one device; `mirrored`
    over every visible GPU (or logical CPU); `multiworker` across the workers of TF_CONFIG."""
    if name not in STRATEGIES:
        raise PipelineError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def mixed_policy():
    """Keras' mixed dtype policy for this machine: float16 compute on a GPU; bfloat16 on a CPU, where float16 is
    emulated (bfloat16 runs natively on CPUs with AVX512-BF16 or AMX, and needs no loss scaling)."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def use_mixed_precision(requested=None, deterministic=False):
    """Set Keras' dtype policy: `mixed_policy()` when `requested` (None: when a GPU is visible and not
    `deterministic`). Output layers of the task models stay float32. Returns whether it is on."""
    on = bool(tf.config.list_logical_devices("GPU")) and not deterministic if requested is None else requested
    keras.mixed_precision.set_global_policy(mixed_policy() if on else "float32")
    return on


def describe(strategy, mixed_precision):
    devices = list(strategy.extended.worker_devices)
    return (f"training on {len(devices)} device(s) ({', '.join(devices)}) with {type(strategy).__name__}, "
            f"mixed precision {keras.mixed_precision.global_policy().name if mixed_precision else 'off'}")


class ValidationScore(keras.callbacks.Callback):
    """Adds `name` to each epoch's logs: `score(y_val, predictions)` on the validation inputs (for a monitor
    Keras cannot compute per batch, such as micro-F1 at a tuned threshold). Runs before the other callbacks."""

    def __init__(self, name, score, inputs, y_val):
        super().__init__()
        self.name, self.score, self.inputs, self.y_val = name, score, inputs, y_val

    def on_epoch_end(self, epoch, logs=None):
        logs[self.name] = float(self.score(self.y_val, self.model.predict(self.inputs, verbose=0)))


class BestWeights(keras.callbacks.Callback):
    """The weights with the best `monitor` so far, across phases, of `model` (the whole model, even while a
    phase fits its head alone); written to `path` (for a resumed run) when it improves."""

    def __init__(self, model, monitor, mode, path=None, best=None, best_weights=None):
        super().__init__()
        self.whole, self.monitor, self.path = model, monitor, path
        self.better = np.less if mode == "min" else np.greater
        self.best = best if best is not None else (np.inf if mode == "min" else -np.inf)
        self.best_weights = best_weights

    def update(self, value):
        if self.better(value, self.best):
            self.best, self.best_weights = float(value), self.whole.get_weights()
            if self.path is not None:
                path = Path(self.path)
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f"partial.{path.name}")  # Keras needs the .weights.h5 ending
                self.whole.save_weights(partial)
                partial.replace(path)
                write_json({"best": self.best}, Path(self.path).with_suffix(".json"))

    def on_epoch_end(self, epoch, logs=None):
        self.update(logs[self.monitor])


def targets_of(dataset):
    return np.concatenate([np.asarray(y) for _, y in dataset.as_numpy_iterator()])


def fit(build, train_data, val_data, loss, strategy=None, metrics=(), epochs=10, finetune_epochs=0,
        finetune_layers=0, learning_rate=1e-3, finetune_learning_rate=1e-4, batch_size=32, patience=3,
        monitor="val_loss", mode="min", score=None, from_scratch=False, head_data=None, class_weight=None,
        backup_dir=None, resume=False, callbacks=(), verbose=2):
    """Build the model with `build()` in `strategy`'s scope and train it; returns (model with its best weights,
    history DataFrame: one row per epoch, `phase` start/frozen/finetune/train, the logs of Keras).

    `score(y_val, predictions) -> float` adds `monitor` (e.g. "val_micro_f1", mode "max") from the validation
    predictions. `head_data`: ((x_train, y_train), (x_val, y_val)) for the frozen phase: the backbone's features of
    the un-augmented images, or for a model of several named inputs a dict of them with the features under "image".
    `callbacks`: more Keras callbacks for every phase.
    """
    strategy = strategy or make_strategy("one")
    global_batch = batch_size * strategy.num_replicas_in_sync
    with strategy.scope():
        model = build()
        layer_names = {layer.name for layer in model.layers}
        # the frozen phase on features trains the model's nested "head" (callbacks may look for that name), or else
        # a view of everything above its backbone
        head = view = None
        if head_data is not None and "head" in layer_names:
            head = model.get_layer("head")
        elif head_data is not None:
            head = view = above_backbone(model)
    if head_data is not None and head is None:
        raise ValueError(f"head_data given, but the image input of {model.name} does not go straight into a layer "
                         "named 'backbone'")
    backbone = model.get_layer("backbone") if "backbone" in layer_names else None
    if backbone is None or from_scratch:
        phases = [("train", epochs + (finetune_epochs if from_scratch else 0), learning_rate, None)]
    else:
        phases = [("frozen", epochs, learning_rate, 0), ("finetune", finetune_epochs, finetune_learning_rate,
                                                          finetune_layers)]
    backup = Path(backup_dir) if backup_dir else None
    if backup is not None and not resume:
        shutil.rmtree(backup, ignore_errors=True)
    done = read_progress(backup)
    best = BestWeights(model, monitor, mode, backup / "best.weights.h5" if backup else None)
    if done:
        model.load_weights(backup / "best.weights.h5")
        best.best, best.best_weights = done["best"], model.get_weights()
        print(f"resuming after phase(s) {', '.join(done['phases'])} from {backup}")
    rows = done.get("rows", [])

    val_images = val_data(global_batch)
    y_val = targets_of(val_images) if score else None
    for phase, phase_epochs, rate, top_layers in phases:
        if phase in done.get("phases", []) or phase_epochs == 0:
            continue
        if backbone is not None:
            if top_layers == 0:
                backbone.trainable = False
            elif top_layers is not None:
                set_trainable(backbone, top_layers)
            elif from_scratch:
                backbone.trainable = True
        on_features = phase == "frozen" and head is not None
        trained = head if on_features else model
        if on_features:
            (x_train, y_train), (x_val, y_features) = head_data
            train_ds = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(y_train), seed=0) \
                .batch(global_batch)
            val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_features)).batch(global_batch)
        else:
            train_ds, val_ds = train_data(global_batch), val_images
        phase_callbacks = [ValidationScore(monitor, score, val_ds, y_val)] if score else []
        phase_callbacks += [best, keras.callbacks.EarlyStopping(monitor, patience=patience, mode=mode)]
        if backup is not None:
            phase_callbacks.append(keras.callbacks.BackupAndRestore(str(backup / phase)))
        phase_callbacks += list(callbacks)
        with strategy.scope():
            trained.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=list(metrics),
                            steps_per_execution=steps_per_execution(phase_callbacks, strategy))
        if not rows:  # the untrained model: the kept weights are never worse on validation than the start
            start = {f"val_{k}": v for k, v in trained.evaluate(val_ds, verbose=0, return_dict=True).items()}
            if score:
                start[monitor] = float(score(y_val, trained.predict(val_ds, verbose=0)))
            rows.append({"epoch": 0, "phase": "start", **start})
            best.update(start[monitor])
        # The tf.data input shuffles itself; Keras' default shuffle=True only prints a warning for a dataset.
        history = trained.fit(train_ds, validation_data=val_ds, epochs=phase_epochs, callbacks=phase_callbacks,
                              class_weight=class_weight, shuffle=False, verbose=verbose)
        first = len(rows)
        rows += [{"epoch": first + i, "phase": phase, **{k: float(v[i]) for k, v in history.history.items()}}
                 for i in range(len(history.epoch))]
        if backup is not None:
            write_json({"phases": done.get("phases", []) + [phase], "best": best.best, "rows": rows},
                       backup / "progress.json")
            done = read_progress(backup)
    if best.best_weights is not None:
        model.set_weights(best.best_weights)
    if view is not None:  # the view above the backbone left nodes in the model's graph that saving trips on
        with strategy.scope():
            fresh = build()
        fresh.set_weights(model.get_weights())
        model = fresh
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return model, pd.DataFrame(rows)


def steps_per_execution(callbacks, strategy):
    """Training steps per call into TensorFlow: STEPS_PER_EXECUTION, or one where a callback acts before each
    training batch (HeadCosineSchedule sets the learning rate there; Keras calls batch hooks once per call) and
    under several replicas (Keras 3.15's loop of several steps fails on a distributed dataset: "You must feed a value
    for placeholder tensor")."""
    per_batch = any(type(c).on_train_batch_begin is not keras.callbacks.Callback.on_train_batch_begin
                    for c in callbacks)
    return 1 if per_batch or strategy.num_replicas_in_sync > 1 else STEPS_PER_EXECUTION


def read_progress(backup):
    """What an interrupted run finished: {"phases", "best", "rows"}, or {} when it has to start over."""
    if backup is None or not (backup / "progress.json").exists() or not (backup / "best.weights.h5").exists():
        return {}
    return json.loads((backup / "progress.json").read_text())


def best_row(history, monitor="val_loss", mode="min"):
    values = history[monitor]
    return history.loc[values.idxmin() if mode == "min" else values.idxmax()]


def write_history(history, stem, title, metrics=("loss",)):
    """`stem`_history.csv and `stem`_curve.png: training and validation values of each metric per epoch (one line
    per ensemble member where the history has a `member` column), the start of fine-tuning marked."""
    stem = Path(stem)
    write_csv(history, stem.with_name(f"{stem.name}_history.csv"))
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    members = history.groupby("member") if "member" in history.columns else [(None, history)]
    for member, rows in members:
        suffix = "" if member is None else f" {member}"
        trained = rows[rows["phase"] != "start"]
        for axis, metric in zip(axes[0], metrics):
            if metric in trained:
                axis.plot(trained["epoch"], trained[metric], "o-", label=f"train{suffix}")
            if f"val_{metric}" in rows:
                axis.plot(rows["epoch"], rows[f"val_{metric}"], "o-", label=f"validation{suffix}")
            for epoch in rows.loc[rows["phase"] == "finetune", "epoch"].head(1):
                axis.axvline(epoch - 0.5, color="grey", linestyle="--", label="fine-tune starts")
    for axis, metric in zip(axes[0], metrics):
        axis.set(xlabel="epoch", ylabel=metric, title=metric)
        axis.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(stem.with_name(f"{stem.name}_curve.png")) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters


def reuse_freed_memory():
    """Undo what TensorFlow 2.21 does to glibc's malloc the first time a process makes a generator dataset (Keras
    makes one for every fit under a tf.distribute strategy; the captioner's input is one): it sets M_TRIM_THRESHOLD
    to 128 KB, which also stops glibc from raising its mmap threshold, so every block of 128 KB or more is mapped
    fresh and unmapped when freed. A head training on cached activations then spent 45% of its CPU time in the
    kernel, faulting those pages in (33 million page faults in one characters20 epoch). TensorFlow does it once per
    process, so a generator dataset made here has it done now; then glibc is told never to map a block of its own
    and to give the heap's free top back only past 1 GB, so that blocks past its 32 MB mmap ceiling are reused too
    (the tagger's default recipe, 2 epochs: 11 min 4 s -> 8 min 52 s, page faults 26.6 M -> 9.9 M, the same peak
    memory and losses). Nothing to do without glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return
    for _ in tf.data.Dataset.from_generator(lambda: iter([0]), output_signature=tf.TensorSpec((), tf.int32)):
        pass
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, 1 << 30)


def start(seed=42, deterministic=False, strategy="auto", mixed_precision=None):
    """Seed, pick the dtype policy and the strategy of a training run, and say which devices it trains on.
    Returns the strategy."""
    reuse_freed_memory()
    set_seed(seed, deterministic)
    on = use_mixed_precision(mixed_precision, deterministic)
    chosen = make_strategy(strategy)
    print(describe(chosen, on))
    return chosen


_last_forward_pass = {}  # the last model forward_pass compiled: {"model": ..., "function": ...}


def forward_pass(model):
    """`model(x)` (inference) as one graph for any number of images, given as uint8 (whole pixel values,
    image_batch's `dtype=np.uint8`: cast inside the graph, which costs less than a float32 copy in numpy) or as
    anything TensorFlow turns into float32. Keras' `predict_on_batch` traces its graph again (about a second on a
    CPU) for the second batch size it meets, such as a run's last, shorter chunk."""
    if _last_forward_pass.get("model") is not model:
        shape = (None, *model.input_shape[1:])
        graphs = {dtype: tf.function(lambda x: model(tf.cast(x, tf.float32), training=False),
                                     input_signature=[tf.TensorSpec(shape, dtype)]) for dtype in (tf.float32, tf.uint8)}
        _last_forward_pass.update(model=model, function=lambda x: graphs[
            tf.uint8 if tf.as_dtype(x.dtype) == tf.uint8 else tf.float32](x))
    return _last_forward_pass["function"]
