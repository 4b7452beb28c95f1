"""Tokenize `sentences.txt` into `calib.npz` and `eval.npz`, and check the float model.

Called by `prepare.sh` with the example venv's python (numpy, onnxruntime, tokenizers):

    prepare.py MODEL VOCAB

Writes, beside this file, `calib.npz` (the first `CALIBRATION` sentences) and `eval.npz` (the
rest), each with `input_ids` and `attention_mask`, int64 `[N, LENGTH]`, padded with 0 and a
mask of 0. Before writing it checks that no sentence is cut, that every id is below the
model's vocabulary size (the rows of its word-embedding table), that output `461` is the
mask-weighted mean of the token embeddings, and that the float model places the paraphrase
pairs of `pairs.tsv` closer together than unrelated sentences; it prints those figures.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from tokenizers import BertWordPieceTokenizer

HERE = Path(__file__).resolve().parent
LENGTH = 64
CALIBRATION = 160
OUTPUT = "461"
TOKENS = "onnx::Shape_422"


def fail(message, hint):
    sys.exit(f"error: {message}\nhint: {hint}")


def vocabulary_rows(model_path):
    """Rows of the model's word-embedding table: the largest id it can look up, plus one."""
    model = onnx.load(str(model_path), load_external_data=False)
    for init in model.graph.initializer:
        if "word_embeddings" in init.name and len(init.dims) == 2:
            return int(init.dims[0])
    fail(f"{model_path} has no 2-D initializer named like `word_embeddings`",
         "the model is not paraphrase-MiniLM-L3-v2 as scripts/fetch-minilm.sh fetches it")


def encode(tokenizer, sentences, source):
    """`input_ids` and `attention_mask` of `sentences`, int64 [N, LENGTH]; none may be cut."""
    encodings = tokenizer.encode_batch(sentences)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)

    for sentence, enc in zip(sentences, encodings):
        if enc.overflowing:
            fail(f"{source}: `{sentence}` is longer than {LENGTH} tokens",
                 f"shorten it or raise LENGTH in {Path(__file__).name}")
    return ids, mask


def check_ids(ids, rows, unknown, source):
    top = int(ids.max())
    if top >= rows:
        fail(f"{source}: token id {top} is not below the model's vocabulary of {rows}",
             "the vocab.txt does not belong to this model")
    unknowns = int((ids == unknown).sum())
    print(f"{source}: {len(ids)} sentences, largest id {top} < {rows}, "
          f"{unknowns} [UNK] tokens, longest {int((ids != 0).sum(1).max())} of {LENGTH}")


def embed(session, ids, mask):
    outputs = session.run([OUTPUT, TOKENS], {"input_ids": ids, "attention_mask": mask})
    return outputs[0], outputs[1]


def check_pooling(session, ids, mask):
    """Output 461 must be the mean of the token embeddings over the unmasked positions."""
    sentence, tokens = embed(session, ids, mask)
    weights = mask[:, :, None].astype(np.float32)
    expected = (tokens * weights).sum(1) / weights.sum(1)
    error = float(np.abs(sentence - expected).max())
    print(f"output {OUTPUT} against numpy's masked mean of {TOKENS}: max abs error {error:.2e}")
    if error > 1e-4:
        fail(f"output {OUTPUT} is not the masked mean of the token embeddings ({error})",
             "check the padding: the mask must be 0 exactly where the ids are padding")


def unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def check_pairs(session, tokenizer, pairs):
    """Paraphrases must be closer than unrelated sentences: by mean cosine and by retrieval."""
    left, lmask = encode(tokenizer, [a for a, _ in pairs], "pairs.tsv")
    right, rmask = encode(tokenizer, [b for _, b in pairs], "pairs.tsv")
    a = unit(embed(session, left, lmask)[0])
    b = unit(embed(session, right, rmask)[0])
    cosine = a @ b.T

    same = np.diag(cosine)
    other = cosine[~np.eye(len(pairs), dtype=bool)]
    hits = int((cosine.argmax(1) == np.arange(len(pairs))).sum())
    print(f"float model on {len(pairs)} paraphrase pairs: mean cosine {same.mean():.3f} "
          f"(lowest {same.min():.3f}); unrelated pairs: mean {other.mean():.3f} "
          f"(highest {other.max():.3f}); the paraphrase is the nearest of "
          f"{len(pairs)} for {hits}")
    if same.mean() < other.mean() + 0.3 or hits < 0.9 * len(pairs):
        fail("the float model does not tell paraphrases from unrelated sentences",
             "the tokenizer or vocabulary does not match the model")


def save(path, **arrays):
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        np.savez(out, **arrays)
    partial.replace(path)
    shapes = ", ".join(f"{k} {v.dtype} {list(v.shape)}" for k, v in arrays.items())
    print(f"wrote {path.name}: {shapes}")


def read_lines(path):
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: prepare.py MODEL VOCAB")
    model_path, vocab_path = Path(sys.argv[1]), Path(sys.argv[2])

    tokenizer = BertWordPieceTokenizer(str(vocab_path), lowercase=True)
    tokenizer.enable_truncation(LENGTH)
    tokenizer.enable_padding(length=LENGTH, pad_id=0)
    unknown = tokenizer.token_to_id("[UNK]")

    sentences = read_lines(HERE / "sentences.txt")
    if len(sentences) != len(set(sentences)) or len(sentences) <= CALIBRATION:
        fail("sentences.txt holds repeated lines or too few",
             "run make_sentences.py again")
    pairs = [tuple(line.split("\t")) for line in read_lines(HERE / "pairs.tsv")]
    if any(len(pair) != 2 for pair in pairs):
        fail("a line of pairs.tsv is not two sentences separated by one tab",
             "fix that line")

    rows = vocabulary_rows(model_path)
    ids, mask = encode(tokenizer, sentences, "sentences.txt")
    check_ids(ids, rows, unknown, "sentences.txt")

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    check_pooling(session, ids[:64], mask[:64])
    check_pairs(session, tokenizer, pairs)

    save(HERE / "calib.npz", input_ids=ids[:CALIBRATION], attention_mask=mask[:CALIBRATION])
    save(HERE / "eval.npz", input_ids=ids[CALIBRATION:], attention_mask=mask[CALIBRATION:])


if __name__ == "__main__":
    main()
