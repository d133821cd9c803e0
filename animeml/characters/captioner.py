"""The Keras captioner: an image encoder on an animeml backbone and a small Transformer decoder, with the structure
of the keras-io image-captioning example (CNN feature map -> one Transformer encoder block; token + position
embedding -> causal self-attention, cross-attention to the image, feed-forward -> word logits).

It is built as a functional model of two nested functional models, `image_encoder` and `caption_decoder`, so it
saves to and reloads from `.h5` (a subclassed model saves but does not load), and decoding runs the encoder once
per image and only the decoder per word. The vocabulary lives in the model's sidecar.
"""
import keras
import numpy as np
import tensorflow as tf
from keras import layers
from tqdm import tqdm

from animeml.characters.caption_metrics import tokenize
from animeml.core.backbones import build_backbone, last_conv_layer_name

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
SPECIAL = (PAD, UNK, START, END)


@keras.saving.register_keras_serializable(package="animeml")
class PositionalEmbedding(layers.Layer):
    """Token embedding scaled by sqrt(dim) plus a learned embedding of each position (keras-io)."""

    def __init__(self, sequence_length, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length, self.vocab_size, self.embed_dim = sequence_length, vocab_size, embed_dim
        self.tokens = layers.Embedding(vocab_size, embed_dim)
        self.positions = layers.Embedding(sequence_length, embed_dim)

    def build(self, input_shape):
        self.tokens.build(input_shape)
        self.positions.build((self.sequence_length,))
        super().build(input_shape)

    def call(self, inputs):
        positions = keras.ops.arange(keras.ops.shape(inputs)[-1])
        return self.tokens(inputs) * (self.embed_dim ** 0.5) + self.positions(positions)

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length, "vocab_size": self.vocab_size,
                "embed_dim": self.embed_dim}


CUSTOM_OBJECTS = {"PositionalEmbedding": PositionalEmbedding}


def build_vocabulary(captions, min_count=1, max_size=5000):
    """Special tokens, then the training captions' words by frequency (ties by word), at most `max_size`."""
    counts = {}
    for caption in captions:
        for word in tokenize(caption):
            counts[word] = counts.get(word, 0) + 1
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return list(SPECIAL) + words[:max_size - len(SPECIAL)]


def encode_captions(captions, vocabulary, sequence_length):
    """Captions -> int32 (n, sequence_length + 1): <start> words <end>, padded with 0, cut to fit."""
    index = {word: i for i, word in enumerate(vocabulary)}
    result = np.zeros((len(captions), sequence_length + 1), np.int32)
    for row, caption in enumerate(captions):
        ids = [index[START]] + [index.get(w, index[UNK]) for w in tokenize(caption)][:sequence_length - 1]
        ids.append(index[END])
        result[row, :len(ids)] = ids
    return result


def build_captioner(backbone_name, image_size, vocab_size, sequence_length, embed_dim=256, ff_dim=512, heads=2,
                    dropout=0.1, pretrained=True, freeze_backbone=True):
    """The functional captioner: inputs `image` (H, W, 3, 0..255) and `tokens` (sequence_length,), output word
    logits (sequence_length, vocab_size) predicting each next token."""
    backbone = build_backbone(backbone_name, image_size, weights="imagenet" if pretrained else None)
    feature_map = keras.Model(backbone.input, backbone.get_layer(last_conv_layer_name(backbone)).output,
                              name="backbone")
    feature_map.trainable = not (freeze_backbone and pretrained)

    image = keras.Input((image_size, image_size, 3), name="image")
    x = feature_map(image)
    x = layers.Reshape((-1, x.shape[-1]), name="patches")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="encoder_norm_in")(x)
    x = layers.Dense(embed_dim, activation="relu", name="encoder_dense")(x)
    attended = layers.MultiHeadAttention(heads, embed_dim, dropout=dropout, name="encoder_attention")(x, x)
    x = layers.Add(name="encoder_residual")([x, attended])
    encoded = layers.LayerNormalization(epsilon=1e-6, name="encoder_norm_out")(x)
    image_encoder = keras.Model(image, encoded, name="image_encoder")

    features = keras.Input(encoded.shape[1:], name="features")
    tokens = keras.Input((sequence_length,), dtype="int32", name="tokens")
    x = PositionalEmbedding(sequence_length, vocab_size, embed_dim, name="embedding")(tokens)
    attended = layers.MultiHeadAttention(heads, embed_dim, dropout=dropout, name="self_attention")(
        x, x, use_causal_mask=True)
    x = layers.LayerNormalization(epsilon=1e-6, name="self_norm")(layers.Add(name="self_residual")([x, attended]))
    attended = layers.MultiHeadAttention(heads, embed_dim, dropout=dropout, name="cross_attention")(x, features)
    x = layers.LayerNormalization(epsilon=1e-6, name="cross_norm")(layers.Add(name="cross_residual")([x, attended]))
    hidden = layers.Dense(ff_dim, activation="relu", name="ffn_in")(x)
    hidden = layers.Dropout(dropout, name="ffn_dropout")(layers.Dense(embed_dim, name="ffn_out")(hidden))
    x = layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")(layers.Add(name="ffn_residual")([x, hidden]))
    logits = layers.Dense(vocab_size, name="logits", dtype="float32")(layers.Dropout(0.3, name="logits_dropout")(x))
    caption_decoder = keras.Model([features, tokens], logits, name="caption_decoder")

    image_in = keras.Input((image_size, image_size, 3), name="image")
    tokens_in = keras.Input((sequence_length,), dtype="int32", name="tokens")
    return keras.Model({"image": image_in, "tokens": tokens_in},
                       caption_decoder([image_encoder(image_in), tokens_in]), name="captioner")


def compile_captioner(model, learning_rate):
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0))


def train_captioner(parts, vocabulary, strategy, backbone="efficientnet_lite0", image_size=96, sequence_length=16,
                    embed_dim=256, ff_dim=512, heads=2, fine_tune=False, learning_rate=3e-4, batch_size=64,
                    epochs=10, patience=3, seed=0):
    """A captioner built and trained in `strategy`'s scope on `parts["train"]` (a CaptionSet), early stopping on
    `parts["val"]` (or on the training loss where validation is empty) with the best weights kept; `batch_size`
    per device. An ImageNet backbone stays frozen unless `fine_tune` (small_cnn always trains).
    Returns (model, Keras history)."""
    pretrained = backbone != "small_cnn"
    with strategy.scope():
        model = build_captioner(backbone, image_size, len(vocabulary), sequence_length, embed_dim, ff_dim, heads,
                                pretrained=pretrained, freeze_backbone=not fine_tune)
        compile_captioner(model, learning_rate)
    global_batch = batch_size * strategy.num_replicas_in_sync
    datasets = {name: caption_dataset(parts[name], encode_captions(parts[name].captions, vocabulary, sequence_length),
                                      image_size, global_batch, training=name == "train", seed=seed)
                for name in ("train", "val")}
    has_val = len(parts["val"]) > 0
    stop = keras.callbacks.EarlyStopping("val_loss" if has_val else "loss", patience=patience,
                                         restore_best_weights=True)
    history = model.fit(datasets["train"], validation_data=datasets["val"] if has_val else None, epochs=epochs,
                        callbacks=[stop], shuffle=False, verbose=2)
    return model, history


def decode_bytes(data, image_size):
    """Encoded image bytes (a string tensor) -> uint8 (image_size, image_size, 3)."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = tf.image.resize(image, (image_size, image_size))
    return tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8)


def image_dataset(fetch, count, image_size, batch_size):
    """Batches of float32 images from `fetch(i)` -> encoded bytes, i in range(count), in order."""
    ds = tf.data.Dataset.from_generator(lambda: (fetch(i) for i in range(count)),
                                        output_signature=tf.TensorSpec((), tf.string))
    ds = ds.map(lambda data: tf.cast(decode_bytes(data, image_size), tf.float32), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def caption_dataset(data, token_rows, image_size, batch_size, training, seed=0):
    """({"image", "tokens"}, next tokens) batches of a CaptionSet; decoded images cached in memory; training
    shuffles and flips (colours are what the captions name, so no colour jitter)."""
    images = tf.data.Dataset.from_generator(lambda: (data.image_bytes(i) for i in range(len(data))),
                                            output_signature=tf.TensorSpec((), tf.string))
    images = images.apply(tf.data.experimental.assert_cardinality(len(data)))  # so Keras knows an epoch's steps
    ds = tf.data.Dataset.zip(images.map(lambda b: decode_bytes(b, image_size)),
                             tf.data.Dataset.from_tensor_slices(token_rows)).cache()
    if training:
        ds = ds.shuffle(min(len(data), 4096), seed=seed, reshuffle_each_iteration=True)

    def to_element(image, tokens):
        image = tf.cast(image, tf.float32)
        if training:
            image = tf.image.random_flip_left_right(image, seed=seed)
        return {"image": image, "tokens": tokens[:-1]}, tokens[1:]

    return ds.map(to_element, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def decode(model, vocabulary, features, beam_size=1):
    """Captions of encoded images `features` (from the model's image_encoder): greedy with beam_size 1, else beam
    search with length-normalised log-probabilities. Bounded by the model's sequence length."""
    decoder = model.get_layer("caption_decoder")
    length = decoder.input[1].shape[1]
    start, end = vocabulary.index(START), vocabulary.index(END)
    n, k = len(features), beam_size
    features = np.repeat(np.asarray(features), k, axis=0)
    tokens = np.zeros((n, k, length + 1), np.int32)
    tokens[:, :, 0] = start
    scores = np.full((n, k), -np.inf)
    scores[:, 0] = 0.0  # one live beam at first, so the k beams do not start as copies
    finished = np.zeros((n, k), bool)
    lengths = np.zeros((n, k))
    for t in range(length):
        logits = np.asarray(decoder([features, tokens.reshape(n * k, -1)[:, :length]], training=False)[:, t])
        log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        log_probs = log_probs.reshape(n, k, -1)
        log_probs[finished] = -np.inf
        log_probs[finished, 0] = 0.0  # a finished beam only grows padding, at no cost
        total = (scores[:, :, None] + log_probs).reshape(n, -1)
        best = np.argsort(-total, axis=1, kind="stable")[:, :k]
        beam, word = np.divmod(best, log_probs.shape[-1])
        rows = np.arange(n)[:, None]
        tokens, finished, lengths = tokens[rows, beam], finished[rows, beam], lengths[rows, beam]
        tokens[:, :, t + 1] = word
        lengths = lengths + ~finished
        finished = finished | (word == end)
        scores = np.take_along_axis(total, best, axis=1)
        if finished.all():
            break
    chosen = np.argmax(scores / np.maximum(lengths, 1), axis=1)
    return [words_of(tokens[i, chosen[i]], vocabulary) for i in range(n)]


def words_of(ids, vocabulary):
    words = []
    for i in ids[1:]:
        if vocabulary[i] in (END, PAD):
            break
        words.append(vocabulary[i])
    return " ".join(words)


def caption_images(model, vocabulary, fetch, count, image_size, batch_size=32, beam_size=1, desc="captioning"):
    """Captions of `count` images given as encoded bytes by `fetch(i)`, in order, with a progress bar unless
    `desc` is None."""
    encoder = model.get_layer("image_encoder")
    captions = []
    for batch in tqdm(image_dataset(fetch, count, image_size, batch_size), total=-(-count // batch_size),
                      desc=desc, unit="batch", disable=desc is None):
        captions += decode(model, vocabulary, encoder(batch, training=False), beam_size)
    return captions
