#!/usr/bin/python3
"""A small pretrained classifier: logistic regression on dinucleotide frequencies.

usage: classify MODEL INPUT.fa OUTPUT.tsv
The weights ship as $WEIGHTS_DIR/MODEL.json (default /opt/model/weights): {"bias": b,
"weights": {"AA": w, ...}}; the output is each sequence's probability of the positive class.
"""
import json
import math
import os
import sys

DINUCLEOTIDES = [a + b for a in "ACGT" for b in "ACGT"]


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


def features(seq):
    pairs = [seq[i:i + 2] for i in range(len(seq) - 1)]
    n = max(1, len(pairs))
    return {d: pairs.count(d) / n for d in DINUCLEOTIDES}


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    model, fasta, out = argv[1:]
    weights_dir = os.environ.get("WEIGHTS_DIR", "/opt/model/weights")
    with open(os.path.join(weights_dir, model + ".json")) as f:
        params = json.load(f)
    with open(out, "w") as f:
        f.write("sequence\tprobability\n")
        for name, seq in read_fasta(fasta):
            x = features(seq)
            z = params["bias"] + sum(params["weights"].get(d, 0.0) * v for d, v in x.items())
            f.write(f"{name}\t{1 / (1 + math.exp(-z)):.6f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
