"""Render labelled text lines for the text-direction classifier and check the float model.

Called by `prepare.sh` with the example venv's python (numpy, onnxruntime, Pillow):

    make_data.py MODEL FONT

Each sample is a line of made-up words (syllables of this script's own list, some digits and
capitals) drawn with Pillow in FONT at a random size, ink and paper shade and margin: label 0
upright, label 1 the same image turned 180 degrees. It is preprocessed as PaddleOCR's
direction classifier does: resized to height 48 keeping the aspect ratio (width
`ceil(48 * w / h)`, at most 192), bilinear, scaled `(x / 255 - 0.5) / 0.5`, channels first,
zero-padded on the right to width 192, float32 `[N, 3, 48, 192]`. Writes `calib.npz` (input
only) and `test.npz` (input and labels `y`, int64) beside this file from disjoint lines, and
prints the float model's top-1 accuracy on `test.npz` (it must be above 90%, else the
preprocessing is wrong and nothing is written).
"""

import math
import random
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
HEIGHT, WIDTH = 48, 192
CALIBRATION_LINES = 64  # two images each: 128 calibration samples
TEST_LINES = 200  # 400 test samples, half of each label
SYLLABLES = [
    "ka", "lo", "mi", "ber", "ton", "sa", "ve", "dri", "pul", "nor", "gen", "fi", "har",
    "os", "ut", "wel", "zan", "cre", "mo", "tal", "rin", "sho", "pe", "dam", "lu", "ex",
    "qua", "bri", "st", "ing", "ly", "ment", "ck", "th", "ou", "ai",
]
MIN_ACCURACY = 0.9


def make_word(rng):
    """A made-up word: a few syllables, sometimes capitalized, now and then a number."""
    if rng.random() < 0.12:
        return str(rng.randint(1, 99999))
    word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.3:
        word = word.capitalize()
    elif rng.random() < 0.05:
        word = word.upper()
    return word


def make_line(rng):
    return " ".join(make_word(rng) for _ in range(rng.randint(1, 5)))


def render(text, font_path, rng):
    """The line drawn on a light, slightly noisy background, tightly cropped plus a margin."""
    font = ImageFont.truetype(str(font_path), rng.randint(18, 44))
    left, top, right, bottom = font.getbbox(text)
    margin_x, margin_y = rng.randint(2, 12), rng.randint(2, 10)
    size = (right - left + 2 * margin_x, bottom - top + 2 * margin_y)

    paper = rng.randint(200, 255)
    ink = rng.randint(0, 80)
    image = Image.new("L", size, paper)
    ImageDraw.Draw(image).text((margin_x - left, margin_y - top), text, font=font, fill=ink)

    pixels = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).convert("RGB")


def preprocess(image):
    """PaddleOCR's classifier input: height 48, width ceil(48 * ratio) up to 192, padded."""
    w, h = image.size
    resized_w = min(WIDTH, math.ceil(HEIGHT * w / h))
    resized = image.resize((resized_w, HEIGHT), Image.Resampling.BILINEAR)

    chw = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255
    chw = (chw - 0.5) / 0.5
    padded = np.zeros((3, HEIGHT, WIDTH), dtype=np.float32)
    padded[:, :, :resized_w] = chw
    return padded


def make_set(lines, font_path, rng):
    inputs, labels = [], []
    for text in lines:
        image = render(text, font_path, rng)
        inputs += [preprocess(image), preprocess(image.transpose(Image.Transpose.ROTATE_180))]
        labels += [0, 1]
    return np.stack(inputs), np.array(labels, dtype=np.int64)


def distinct_lines(rng, count, taken):
    lines = []
    while len(lines) < count:
        line = make_line(rng)
        if line not in taken:
            taken.add(line)
            lines.append(line)
    return lines


def save(path, **arrays):
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        np.savez(out, **arrays)
    partial.replace(path)
    shapes = ", ".join(f"{k} {v.dtype} {list(v.shape)}" for k, v in arrays.items())
    print(f"wrote {path.name}: {shapes}")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_data.py MODEL FONT")
    model_path, font_path = Path(sys.argv[1]), Path(sys.argv[2])

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        sys.exit(f"error: {model_path} has {len(inputs)} inputs, the classifier has one\n"
                 "hint: the model is not ch_ppocr_mobile_v2.0_cls_infer.onnx")
    name = inputs[0].name

    rng = random.Random(2024)
    taken = set()
    test_x, test_y = make_set(distinct_lines(rng, TEST_LINES, taken), font_path, rng)
    calib_x, _ = make_set(distinct_lines(rng, CALIBRATION_LINES, taken), font_path, rng)

    probabilities = np.concatenate(
        [session.run(None, {name: test_x[i : i + 64]})[0] for i in range(0, len(test_x), 64)]
    )
    predicted = probabilities.argmax(1)
    accuracy = float((predicted == test_y).mean())
    upright = float((predicted[test_y == 0] == 0).mean())
    turned = float((predicted[test_y == 1] == 1).mean())
    print(f"float model on test.npz: top-1 accuracy {accuracy:.4f} "
          f"({int((predicted == test_y).sum())}/{len(test_y)}; upright {upright:.4f}, "
          f"turned 180 degrees {turned:.4f})")
    if accuracy < MIN_ACCURACY:
        sys.exit(f"error: the float model classifies only {accuracy:.1%} of the rendered lines"
                 f" (at least {MIN_ACCURACY:.0%} expected)\n"
                 "hint: the preprocessing does not match the model's")

    save(HERE / "calib.npz", **{name: calib_x})
    save(HERE / "test.npz", **{name: test_x, "y": test_y})


if __name__ == "__main__":
    main()
