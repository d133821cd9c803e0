"""Caption data and BLIP: one reader for both caption-set layouts, a saved seeded split, and the BLIP helpers
(load, download, generate, fine-tune) that the caption steps share.

Layouts (give the folder, or the file itself):
  - `captions.csv` (`file,caption`) beside `images/`; `file` is relative to the CSV's folder or to `images/`;
  - Hugging Face `.arrow` shards anywhere under the folder (e.g. `train/shards/anime-captions-train-00000-of-00057
    .arrow`), columns `image` (encoded image bytes) and `text`, read with the `datasets` library (memory-mapped).
A row whose image does not decode or whose caption is empty is reported (`bad_rows.csv`) and skipped.

BLIP is `BlipProcessor` + `BlipForConditionalGeneration` from Hugging Face Transformers, read from a local folder
written with `save_pretrained`; nothing is fetched unless `download_blip` is called.
"""
import hashlib
import io
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from animeml.core import paths, splits
from animeml.core.io import PipelineError, atomic_path, read_csv, write_csv, write_json

CSV_NAME = "captions.csv"
BLIP_NAME = "Salesforce/blip-image-captioning-base"
CHECKPOINT_PREFIX = "step_"


def captions_dir():
    return paths.data_dir() / "captions"


def default_blip_dir():
    """Where `caption_images.py --download` puts the pretrained BLIP."""
    return paths.models_dir() / "blip"


def finetuned_blip_dir():
    """Where step 06 saves the fine-tuned BLIP."""
    return paths.models_dir() / "blip_captions"


class CaptionSet:
    """Rows of a caption set: `keys` (the image's file, or `<shard>:<row>`), `captions`, and the image bytes of a
    row by `image_bytes(i)`; `subset(indices)` keeps some rows."""

    def __init__(self, source, layout, keys, captions, fetch):
        self.source, self.layout = Path(source), layout
        self.keys, self.captions, self._fetch = list(keys), list(captions), fetch

    def __len__(self):
        return len(self.keys)

    def image_bytes(self, i):
        return self._fetch(i)

    def image(self, i):
        return decode_image(self.image_bytes(i))

    def subset(self, indices):
        indices = list(indices)
        return CaptionSet(self.source, self.layout, [self.keys[i] for i in indices],
                          [self.captions[i] for i in indices], lambda j: self._fetch(indices[j]))


def decode_image(data):
    """Encoded image bytes -> an RGB PIL image (fully decoded, so a truncated file fails here)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def read_caption_set(source, check=True):
    """The caption set at `source` (a folder, a captions.csv or an .arrow file) and a table of its bad rows
    (`key, reason`). With `check`, every image is decoded once so an undecodable one becomes a bad row."""
    source = Path(source)
    if source.is_dir() and (source / CSV_NAME).is_file():
        data = _read_csv_layout(source / CSV_NAME)
    elif source.is_file() and source.suffix == ".csv":
        data = _read_csv_layout(source)
    elif source.is_file() and source.suffix == ".arrow":
        data = _read_arrow_layout(source, [source])
    elif source.is_dir() and any(source.rglob("*.arrow")):
        data = _read_arrow_layout(source, sorted(source.rglob("*.arrow")))
    else:
        raise PipelineError(f"no caption set at {source}: expected a folder with {CSV_NAME} (file,caption) and "
                            f"images/, or Hugging Face .arrow shards (image, text)")
    bad, good = [], []
    for i in tqdm(range(len(data)), desc="checking captions", unit="row", disable=not check or len(data) < 500):
        reason = _row_problem(data, i, check)
        (bad.append((data.keys[i], reason)) if reason else good.append(i))
    if not good:
        raise PipelineError(f"caption set {source} has no usable row ({len(bad)} bad)")
    return data.subset(good), pd.DataFrame(bad, columns=["key", "reason"])


def _row_problem(data, i, check):
    if not str(data.captions[i]).strip():
        return "empty caption"
    try:
        image_bytes = data.image_bytes(i)
        if check:
            decode_image(image_bytes)
    except FileNotFoundError:
        return "image file missing"
    except PipelineError as err:
        return str(err)
    except Exception as err:
        return f"image does not decode ({type(err).__name__})"
    return None


def _read_csv_layout(csv_path):
    table = read_csv(csv_path, "captions CSV", ("file", "caption"), dtype=str, keep_default_na=False)
    root = csv_path.parent.resolve()

    def fetch(i):
        name = table["file"].iloc[i]
        for candidate in (root / name, root / "images" / name):
            resolved = candidate.resolve()
            if not resolved.is_relative_to(root):
                raise PipelineError("image path leaves the caption folder")
            if resolved.is_file():
                return resolved.read_bytes()
        raise FileNotFoundError(name)

    return CaptionSet(csv_path.parent, "csv", table["file"], table["caption"].str.strip(), fetch)


def _read_arrow_layout(root, shard_paths):
    from datasets import Dataset, concatenate_datasets

    shards = []
    for path in shard_paths:
        try:
            shards.append(Dataset.from_file(str(path)))
        except Exception as err:
            raise PipelineError(f"{path} is not a readable Arrow shard ({type(err).__name__})") from None
        if not {"image", "text"} <= set(shards[-1].column_names):
            raise PipelineError(f"{path} needs the columns image,text; it has {', '.join(shards[-1].column_names)}")
    keys = [f"{path.name}:{row}" for path, shard in zip(shard_paths, shards) for row in range(len(shard))]
    table = concatenate_datasets(shards).select_columns(["image", "text"])
    captions = [str(text or "").strip() for text in table["text"]]

    def fetch(i):
        image = table[i]["image"]
        return image["bytes"] if isinstance(image, dict) else image  # an Image() feature stores {bytes, path}

    return CaptionSet(root, "arrow", keys, captions, fetch)


def split_path(source):
    """The split file of a caption set: one per source folder, so two sets never share one."""
    resolved = str(Path(source).resolve())
    return captions_dir() / "splits" / f"{Path(resolved).name}_{hashlib.sha1(resolved.encode()).hexdigest()[:8]}.csv"


def bad_rows_path(source):
    path = split_path(source)
    return path.with_name(path.stem + "_bad_rows.csv")


def split_caption_set(data, bad_rows, val=0.1, test=0.15, seed=42):
    """{"train"|"val"|"test": CaptionSet}: the seeded split saved beside the data of this step (made once, reused
    by every caption step), and the bad rows written next to it."""
    path = split_path(data.source)
    write_csv(bad_rows, bad_rows_path(data.source))
    names = splits.load_or_make_split(path, data.keys, val=val, test=test, seed=seed)
    parts = {name: data.subset(np.flatnonzero(names == name)) for name in splits.SPLITS}
    if not len(parts["test"]) or not len(parts["train"]):
        raise PipelineError(f"split {path} leaves no train or test row for {data.source}: the set changed since "
                            f"the split was made; delete the split file to make a new one")
    return parts


def load_caption_splits(source, val=0.1, test=0.15, seed=42):
    """Read, check and split a caption set; prints what was skipped."""
    data, bad = read_caption_set(source)
    if len(bad):
        print(f"{len(bad)} bad caption rows skipped ({bad['reason'].value_counts().to_dict()}), listed in "
              f"{bad_rows_path(source)}")
    return split_caption_set(data, bad, val=val, test=test, seed=seed)


# ---- BLIP ----

def _blip_classes():
    """(BlipProcessor, BlipForConditionalGeneration). Transformers imports triton when present; triton's C extension
    segfaults once TensorFlow is loaded (as in steps that run both), and it only serves CUDA kernels: hide it."""
    sys.modules.setdefault("triton", None)
    from transformers import BlipForConditionalGeneration, BlipProcessor

    return BlipProcessor, BlipForConditionalGeneration


def load_blip(folder, device="cpu"):
    """(processor, model) from a local folder written with save_pretrained; one line naming the download if
    there is none."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise PipelineError(f"no BLIP model in {folder}: where there is internet run `python CharacterTagging/"
                            f"caption_images.py --download {BLIP_NAME} --model {folder}`, or copy a folder saved "
                            f"with save_pretrained there")
    BlipProcessor, BlipForConditionalGeneration = _blip_classes()
    try:
        processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
        model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True)
    except Exception as err:
        raise PipelineError(f"BLIP folder {folder} is unreadable or incomplete ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:200]})") from None
    return processor, model.to(device).eval()


def download_blip(name, folder):
    """Fetch the named Hugging Face BLIP model and save processor and weights into `folder`."""
    BlipProcessor, BlipForConditionalGeneration = _blip_classes()
    try:
        processor = BlipProcessor.from_pretrained(name)
        model = BlipForConditionalGeneration.from_pretrained(name)
    except Exception as err:
        raise PipelineError(f"cannot download {name} ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
                            ) from None
    save_blip(processor, model, folder)


def save_blip(processor, model, folder):
    """save_pretrained into a temporary folder renamed into place, so a crash never leaves half a model."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def generate_captions(processor, model, images, max_length=30, num_beams=3):
    """Captions of a list of PIL images, generated in one batch."""
    import torch

    device = next(model.parameters()).device
    inputs = processor(images=images, return_tensors="pt").to(device)
    with torch.no_grad():
        tokens = model.generate(pixel_values=inputs["pixel_values"], max_length=max_length, num_beams=num_beams)
    return [text.strip() for text in processor.batch_decode(tokens, skip_special_tokens=True)]


def blip_batch(processor, model, images, captions, max_length):
    """Model inputs for training: captions start with BLIP's decoder token, padding is left out of the loss."""
    inputs = processor(images=images, text=captions, padding="longest", truncation=True, max_length=max_length,
                       return_tensors="pt")
    input_ids = inputs["input_ids"].clone()
    input_ids[:, 0] = model.config.text_config.bos_token_id
    labels = input_ids.masked_fill(inputs["attention_mask"] == 0, -100)
    return {"pixel_values": inputs["pixel_values"], "input_ids": input_ids,
            "attention_mask": inputs["attention_mask"], "labels": labels}


def latest_checkpoint(folder):
    """The checkpoint folder with the highest step under `folder`, or None."""
    found = sorted(Path(folder).glob(f"{CHECKPOINT_PREFIX}*"), key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))
    found = [p for p in found if (p / "state.json").is_file()]  # a checkpoint is complete once state.json exists
    return found[-1] if found else None


def finetune_blip(processor, model, train, val, checkpoints, steps, batch_size=8, accumulation=1,
                  learning_rate=5e-5, weight_decay=0.01, checkpoint_every=100, keep_checkpoints=2, max_length=40,
                  seed=0, device="cpu"):
    """Fine-tune BLIP for `steps` optimizer steps (AdamW, `accumulation` micro-batches each; bfloat16/float16
    autocast on a GPU), checkpointing model, optimizer and loss history every `checkpoint_every` steps into
    `checkpoints/step_N/` and resuming from the latest one. The data order depends only on the seed and the
    step, so a resumed run sees the same batches as an unbroken one. Returns the loss history rows
    (`step, split, loss`): the train loss per step and the validation loss at each checkpoint."""
    import torch

    checkpoints = Path(checkpoints)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    use_amp = device.startswith("cuda")
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    step, history = 0, []
    resume = latest_checkpoint(checkpoints)
    if resume is not None:
        state = json.loads((resume / "state.json").read_text())
        step, history = state["step"], state["history"]
        model.load_state_dict(torch.load(resume / "model.pt", map_location=device))
        optimizer.load_state_dict(torch.load(resume / "optimizer.pt", map_location=device))
        print(f"resuming from {resume} (step {step})")

    batches_per_epoch = max(1, math.ceil(len(train) / batch_size))

    def micro_batch(index):
        epoch, position = divmod(index, batches_per_epoch)
        order = np.random.default_rng(seed + epoch).permutation(len(train))
        rows = order[position * batch_size:(position + 1) * batch_size]
        return blip_batch(processor, model, [train.image(i) for i in rows], [train.captions[i] for i in rows],
                          max_length)

    def loss_of(batch):
        batch = {key: value.to(device) for key, value in batch.items()}
        with torch.autocast(device.split(":")[0], dtype=amp_dtype, enabled=use_amp):
            return model(**batch).loss

    progress = tqdm(total=steps, initial=step, desc="fine-tuning BLIP", unit="step")
    while step < steps:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(accumulation):
            loss = loss_of(micro_batch(step * accumulation + micro)) / accumulation
            scaler.scale(loss).backward()
            total += loss.item()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        history.append({"step": step, "split": "train", "loss": total})
        progress.update(1)
        progress.set_postfix(loss=f"{total:.3f}")
        if step % checkpoint_every == 0 or step == steps:
            if len(val):
                history.append({"step": step, "split": "val", "loss": validation_loss(
                    processor, model, val, batch_size, max_length, loss_of)})
            _save_checkpoint(model, optimizer, step, history, checkpoints, keep_checkpoints)
    progress.close()
    model.eval()
    return history


def validation_loss(processor, model, val, batch_size, max_length, loss_of):
    import torch

    model.eval()
    losses, counts = [], []
    with torch.no_grad():
        for start in range(0, len(val), batch_size):
            rows = range(start, min(start + batch_size, len(val)))
            losses.append(float(loss_of(blip_batch(processor, model, [val.image(i) for i in rows],
                                                   [val.captions[i] for i in rows], max_length))))
            counts.append(len(rows))
    model.train()
    return float(np.average(losses, weights=counts))


def _save_checkpoint(model, optimizer, step, history, checkpoints, keep):
    import torch

    folder = checkpoints / f"{CHECKPOINT_PREFIX}{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, state in (("model.pt", model.state_dict()), ("optimizer.pt", optimizer.state_dict())):
        with atomic_path(folder / name) as tmp:
            torch.save(state, tmp)
    write_json({"step": step, "history": history}, folder / "state.json")  # written last: marks it complete
    finished = sorted(checkpoints.glob(f"{CHECKPOINT_PREFIX}*"), key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))
    for old in finished[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def plot_loss(history, path, title):
    """The loss curve (train per step, validation at checkpoints) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, marker in (("train", None), ("val", "o")):
        part = table[table["split"] == split]
        if len(part):
            ax.plot(part["step"], part["loss"], marker=marker, label=split)
    ax.set(xlabel="optimizer step", ylabel="cross-entropy", title=title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
