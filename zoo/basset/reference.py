#!/usr/bin/python3
"""An independent forward pass of predict.py's network, in the Python standard library only (no
PyTorch, no NumPy; float64), to check the image's predictions.

usage: reference.py WEIGHTS.npz INPUT.fa [EXPECTED.tsv TOLERANCE]
Without EXPECTED, prints the predictions as predict.py writes them. With it, compares every
probability with EXPECTED's and exits 1 (naming the cell) when one differs by more than TOLERANCE.
It reads the .npz itself (a zip of .npy files, format 1.0, '<f4', C order), so it shares no code
with the model it checks.
"""
import ast
import math
import struct
import sys
import zipfile

LENGTH = 64
TASKS = ["K562", "HepG2", "GM12878", "H1", "HeLa"]


def load_npz(path):
    tensors = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            data = z.read(name)
            if data[:8] != b"\x93NUMPY\x01\x00":
                raise ValueError("%s: not a .npy file of format 1.0" % name)
            (size,) = struct.unpack("<H", data[8:10])
            header = ast.literal_eval(data[10:10 + size].decode("latin1"))
            if header["descr"] != "<f4" or header["fortran_order"]:
                raise ValueError("%s: expected little-endian float32 in C order" % name)
            shape = header["shape"]
            n = 1
            for d in shape:
                n *= d
            flat = list(struct.unpack("<%df" % n, data[10 + size:10 + size + 4 * n]))
            tensors[name[:-len(".npy")]] = (shape, flat)
    return tensors


def conv_relu_pool(x, weights, bias):
    """x: channels x positions; 'same' zero padding, ReLU, max-pool 2."""
    (out_ch, in_ch, k), w = weights
    positions = len(x[0])
    pad = k // 2
    y = []
    for o in range(out_ch):
        row = []
        for p in range(positions):
            s = bias[1][o]
            for c in range(in_ch):
                base = (o * in_ch + c) * k
                for j in range(k):
                    q = p + j - pad
                    if 0 <= q < positions:
                        s += w[base + j] * x[c][q]
            row.append(max(s, 0.0))
        y.append([max(row[2 * i], row[2 * i + 1]) for i in range(positions // 2)])
    return y


def linear(v, weights, bias):
    (out_n, in_n), w = weights
    return [bias[1][o] + sum(w[o * in_n + i] * v[i] for i in range(in_n)) for o in range(out_n)]


def predict(t, seq):
    x = [[1.0 if i < len(seq) and seq[i] == b else 0.0 for i in range(LENGTH)] for b in "ACGT"]
    for n in ("conv1", "conv2", "conv3"):
        x = conv_relu_pool(x, t[n + ".weight"], t[n + ".bias"])
    h = [max(v, 0.0) for v in linear([v for row in x for v in row], t["fc1.weight"], t["fc1.bias"])]
    return [1.0 / (1.0 + math.exp(-v)) for v in linear(h, t["fc2.weight"], t["fc2.bias"])]


def read_fasta(path):
    records, name = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith(">"):
                name = line[1:].split()[0]
                records.append([name, ""])
            elif line:
                records[-1][1] += line.upper()
    return records


def main(argv):
    if len(argv) not in (3, 5):
        sys.stderr.write(__doc__)
        return 2
    t = load_npz(argv[1])
    rows = [(name, predict(t, seq)) for name, seq in read_fasta(argv[2])]
    if len(argv) == 3:
        sys.stdout.write("sequence\t" + "\t".join(TASKS) + "\n")
        for name, p in rows:
            sys.stdout.write(name + "\t" + "\t".join("%.6f" % v for v in p) + "\n")
        return 0
    tolerance = float(argv[4])
    with open(argv[3]) as f:
        lines = f.read().splitlines()
    if lines[0].split("\t") != ["sequence"] + TASKS or len(lines) != len(rows) + 1:
        print("%s: expected a header and %d rows" % (argv[3], len(rows)))
        return 1
    worst = 0.0
    for (name, p), line in zip(rows, lines[1:]):
        cells = line.split("\t")
        if cells[0] != name:
            print("%s: row %s, expected sequence %s" % (argv[3], cells[0], name))
            return 1
        for task, mine, theirs in zip(TASKS, p, map(float, cells[1:])):
            worst = max(worst, abs(mine - theirs))
            if abs(mine - theirs) > tolerance:
                print("%s: %s %s: %.6f, the reference computes %.8f" % (argv[3], name, task, theirs, mine))
                return 1
    print("%d predictions within %g of the reference (largest difference %.2g)" % (len(rows) * len(TASKS), tolerance, worst))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
