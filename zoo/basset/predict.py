#!/usr/bin/python3
"""A Basset-shaped CNN (Kelley et al. 2016, scaled down) predicting DNase accessibility in five
cell types from one-hot DNA, with PyTorch.

usage: basset INPUT.fa OUTPUT.tsv
The weights are $WEIGHTS (default /opt/model/dnase5.npz), a NumPy .npz of float32 tensors named
after the state_dict keys (made by make_weights.py), read with allow_pickle=False. Each sequence
is upper-cased, one-hot encoded (A, C, G, T rows; any other letter all zeros), cut or padded with
zeros on the right to 64 positions. The output has a header and one line per sequence: its name
and the five probabilities, 6 decimals.
"""
import os
import sys

import numpy
import torch
from torch import nn

LENGTH = 64
TASKS = ["K562", "HepG2", "GM12878", "H1", "HeLa"]


class Basset(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(4, 16, 7, padding=3)
        self.conv2 = nn.Conv1d(16, 32, 5, padding=2)
        self.conv3 = nn.Conv1d(32, 32, 3, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.fc1 = nn.Linear(32 * (LENGTH // 8), 32)
        self.fc2 = nn.Linear(32, len(TASKS))

    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = self.pool(torch.relu(conv(x)))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return torch.sigmoid(self.fc2(x))


def read_fasta(path):
    name, seq = None, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith(">"):
                if name is not None:
                    yield name, "".join(seq).upper()
                name, seq = line[1:].split()[0], []
            elif line:
                seq.append(line)
    if name is not None:
        yield name, "".join(seq).upper()


def one_hot(seq):
    x = numpy.zeros((4, LENGTH), dtype=numpy.float32)
    for i, base in enumerate(seq[:LENGTH]):
        row = "ACGT".find(base)
        if row >= 0:
            x[row, i] = 1.0
    return x


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    torch.set_num_threads(1)
    model = Basset()
    with numpy.load(os.environ.get("WEIGHTS", "/opt/model/dnase5.npz"), allow_pickle=False) as weights:
        model.load_state_dict({k: torch.from_numpy(weights[k]) for k in weights.files}, strict=True)
    model.eval()
    records = list(read_fasta(argv[1]))
    batch = torch.from_numpy(numpy.stack([one_hot(s) for _, s in records]))
    with torch.no_grad():
        probabilities = model(batch).numpy()
    with open(argv[2], "w") as out:
        out.write("sequence\t" + "\t".join(TASKS) + "\n")
        for (name, _), row in zip(records, probabilities):
            out.write(name + "\t" + "\t".join("%.6f" % float(p) for p in row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
