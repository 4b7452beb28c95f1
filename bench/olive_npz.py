"""Olive's calibration data for bench/compare.py: a dataset named `npz_rows` that yields every
row of an .npz's arrays as one sample (a dict named after the model inputs, and a dummy label),
so Olive's default data loader with `batch_size: 1` feeds the calibrator one row at a time,
as `pipeline` and bench/compare_ort.py do.

Olive imports this file through the `user_script` of the data config that compare.py writes.
"""

import numpy as np
from olive.data.registry import Registry


class NpzRows:
    """Map-style dataset over the rows of an .npz (torch's DataLoader needs no more)."""

    def __init__(self, path):
        data = np.load(path)
        self.arrays = {name: data[name] for name in data.files}
        self.rows = len(next(iter(self.arrays.values())))

    def __len__(self):
        return self.rows

    def __getitem__(self, index):
        if index >= self.rows:
            raise IndexError(index)
        return {name: array[index] for name, array in self.arrays.items()}, 0


@Registry.register_dataset()
def npz_rows(path):
    return NpzRows(path)
