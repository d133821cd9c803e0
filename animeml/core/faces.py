"""Anime face detection: the LBP cascade of nagadomi/lbpcascade_animeface (offline) or an Ultralytics YOLO
face model. Every detector returns boxes as an (n, 5) float array of `x, y, w, h, score` in pixels."""
from pathlib import Path

import numpy as np

from animeml.core.io import PipelineError, atomic_path
from animeml.core.paths import SHARED

DEFAULT_CASCADE = SHARED / "models" / "lbpcascade_animeface.xml"
# nagadomi's recommended settings; minNeighbors 5 keeps false positives on hair and clothes rare.
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
GROUP_EPS = 0.2  # how similar two accepted windows must be for detectMultiScale to group them (OpenCV's constant)
BOX_COLUMNS = ["x", "y", "w", "h", "score"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def load_cascade(path=None):
    """Load the anime-face cascade (default ../shared/models/lbpcascade_animeface.xml)."""
    import cv2

    path = Path(DEFAULT_CASCADE if path is None else path)
    if not hasattr(cv2, "CascadeClassifier"):
        raise PipelineError("cv2.CascadeClassifier is unavailable: install opencv-python-headless<5")
    if not path.exists():
        raise PipelineError(f"face cascade not found: {path}")
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise PipelineError(f"could not read face cascade: {path}")
    return cascade


def detect_faces(image_rgb_uint8, cascade=None, min_size=24, scale_factor=SCALE_FACTOR,
                 min_neighbors=MIN_NEIGHBORS, upscale=1.0):
    """Faces in an RGB uint8 image as (n, 5) `x, y, w, h, score`, best first; the score is the cascade's
    level weight (higher is more face-like). `upscale` > 1 enlarges the image first (finds more small faces in
    small illustrations; `min_size` applies to the enlarged image); boxes are in the original pixels."""
    import cv2

    cascade = load_cascade() if cascade is None else cascade
    gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(image_rgb_uint8, dtype=np.uint8), cv2.COLOR_RGB2GRAY))
    if upscale != 1.0:
        gray = cv2.resize(gray, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR)
    boxes, _, weights = cascade.detectMultiScale3(
        gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size),
        outputRejectLevels=True)
    if len(boxes) == 0:
        return np.zeros((0, 5), dtype=np.float32)
    scores = np.asarray(weights, dtype=np.float32).reshape(-1, 1) if len(weights) else np.ones((len(boxes), 1))
    faces = np.hstack([np.asarray(boxes, dtype=np.float32) / upscale, scores]).astype(np.float32)
    return faces[np.argsort(-faces[:, 4])]


def detect_faces_grid(image_rgb_uint8, cascade, grid):
    """The boxes detect_faces finds with each cascade setting of `grid` (dicts of its keywords), for one RGB image:
    a list of (n, 5) arrays, where the last column counts the windows grouped into the box (not the level weight).

    The cascade runs once per scale factor and upscale of the grid: the windows it accepts at the smallest min_size
    are then, for each min_size and min_neighbors, kept when that large and grouped as detectMultiScale groups them
    (cv2.groupRectangles), which gives the same boxes at a fraction of the cost."""
    import cv2

    gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(image_rgb_uint8, dtype=np.uint8), cv2.COLOR_RGB2GRAY))
    windows = {}
    for scale_factor, upscale in {(s["scale_factor"], s["upscale"]) for s in grid}:
        enlarged = gray if upscale == 1.0 else cv2.resize(gray, None, fx=upscale, fy=upscale,
                                                          interpolation=cv2.INTER_LINEAR)
        smallest = min(s["min_size"] for s in grid if (s["scale_factor"], s["upscale"]) == (scale_factor, upscale))
        windows[scale_factor, upscale] = enlarged.shape, cascade.detectMultiScale3(
            enlarged, scaleFactor=scale_factor, minNeighbors=0, minSize=(smallest, smallest),
            outputRejectLevels=True)[0]
    found = []
    for settings in grid:
        (height, width), accepted = windows[settings["scale_factor"], settings["upscale"]]
        # detectMultiScale clips the windows to the image after grouping them: group the square windows unclipped
        accepted = [[int(x), int(y), int(max(w, h)), int(max(w, h))]
                    for x, y, w, h in accepted
                    if max(w, h) >= settings["min_size"]]
        boxes, counts = cv2.groupRectangles(accepted, settings["min_neighbors"], GROUP_EPS) if accepted else ((), ())
        faces = np.zeros((len(boxes), 5), np.float32)
        if len(boxes):
            boxes = np.asarray(boxes, np.float32)
            boxes[:, 2] = np.minimum(boxes[:, 2], width - boxes[:, 0])
            boxes[:, 3] = np.minimum(boxes[:, 3], height - boxes[:, 1])
            faces[:, :4] = boxes / settings["upscale"]
            faces[:, 4] = np.asarray(counts).reshape(-1)
        found.append(faces[np.argsort(-faces[:, 4], kind="stable")])
    return found


def load_yolo(weights_path):
    """An Ultralytics YOLO face detector from a local weights file (.pt, .onnx, .tflite)."""
    from ultralytics import YOLO

    if not Path(weights_path).exists():
        raise PipelineError(f"detector weights not found: {weights_path}")
    return YOLO(str(weights_path), task="detect")


def detect_faces_yolo(image, weights_path, conf=0.25):
    """Faces found by a YOLO face model (a path, or a model from `load_yolo`) in an RGB uint8 image, as (n, 5)
    `x, y, w, h, score`, best first. Every class of the model counts as a face."""
    model = load_yolo(weights_path) if not hasattr(weights_path, "predict") else weights_path
    bgr = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., ::-1])  # Ultralytics reads arrays as BGR
    result = model.predict(bgr, conf=conf, verbose=False)[0]
    xyxy = result.boxes.xyxy.cpu().numpy().reshape(-1, 4)
    scores = result.boxes.conf.cpu().numpy().reshape(-1, 1)
    faces = np.hstack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2], scores]).astype(np.float32)
    return faces[np.argsort(-faces[:, 4])]


def crop_faces(image, boxes, margin=0.1):
    """Square crops around each box, grown by `margin` of the box size on each side and clipped to the image
    (the cascade box fills ~85% of a moeimouto-faces crop, so 0.1 matches the training faces)."""
    height, width = image.shape[:2]
    crops = []
    for x, y, w, h, _ in boxes:
        side = max(w, h) * (1 + 2 * margin)
        cx, cy = x + w / 2, y + h / 2
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
        crops.append(image[y0:y1, x0:x1].copy())
    return crops


def draw_boxes(image, boxes, labels=None, color=(255, 64, 64)):
    """A copy of an RGB image with each box drawn and labelled (`labels`, or the box score)."""
    import cv2

    canvas = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).copy())
    thickness = max(1, round(max(canvas.shape[:2]) / 300))
    for i, (x, y, w, h, score) in enumerate(boxes):
        x, y, w, h = int(x), int(y), int(w), int(h)
        text = labels[i] if labels is not None else f"{score:.2f}"
        cv2.rectangle(canvas, (x, y), (x + w, y + h), color, thickness)
        cv2.putText(canvas, text, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, color,
                    thickness, cv2.LINE_AA)
    return canvas


def list_images(folder):
    """Image files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"image folder not found: {folder}")
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS)


def load_rgb(path):
    """An image file as an RGB uint8 array (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def save_png(image, path):
    """Write an RGB uint8 array as a PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


DETECTOR_OPTIONS = ("detector_weights", "conf", "cascade", "min_size", "scale_factor", "min_neighbors", "upscale")


def add_detector_arguments(parser, scale_factor=SCALE_FACTOR, min_neighbors=MIN_NEIGHBORS, min_size=24, upscale=1.0):
    """The face-detector options shared by every script that finds faces; the keywords are the cascade's defaults."""
    parser.add_argument("--detector-weights", help="Ultralytics YOLO face model (.pt/.onnx/.tflite) instead of "
                        "the OpenCV cascade")
    parser.add_argument("--cascade", help="LBP cascade XML (default ../shared/models/lbpcascade_animeface.xml)")
    parser.add_argument("--min-size", type=int, default=min_size, help="smallest face side in pixels (cascade)")
    parser.add_argument("--scale-factor", type=float, default=scale_factor, help="cascade image pyramid step")
    parser.add_argument("--min-neighbors", type=int, default=min_neighbors, help="cascade overlapping hits needed")
    parser.add_argument("--upscale", type=float, default=upscale, help="enlarge images this much before the cascade")
    parser.add_argument("--conf", type=float, default=0.25, help="YOLO confidence threshold")


def make_detector(detector_weights=None, conf=0.25, cascade=None, min_size=24, scale_factor=SCALE_FACTOR,
                  min_neighbors=MIN_NEIGHBORS, upscale=1.0):
    """A function RGB image -> (n, 5) boxes: YOLO when `detector_weights` is given, else the LBP cascade."""
    if detector_weights:
        model = load_yolo(detector_weights)
        return lambda image: detect_faces_yolo(image, model, conf=conf)
    loaded = load_cascade(cascade)
    return lambda image: detect_faces(image, loaded, min_size=min_size, scale_factor=scale_factor,
                                      min_neighbors=min_neighbors, upscale=upscale)


def detector_settings(args):
    """The keyword arguments of `make_detector` from the options of `add_detector_arguments`."""
    return {name: getattr(args, name) for name in DETECTOR_OPTIONS}
