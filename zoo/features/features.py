#!/usr/bin/python3
"""Sequence-feature models: one number per DNA sequence.

usage: features MODEL INPUT.fa OUTPUT.tsv
MODEL: gc_content (fraction of G and C), cpg_oe (CpG observed/expected ratio, Gardiner-Garden
and Frommer 1987) or entropy (Shannon entropy of the base composition, bits).
"""
import math
import sys


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


def gc_content(seq):
    return (seq.count("G") + seq.count("C")) / len(seq) if seq else 0.0


def cpg_oe(seq):
    c, g = seq.count("C"), seq.count("G")
    return seq.count("CG") * len(seq) / (c * g) if c and g else 0.0


def entropy(seq):
    total = sum(seq.count(b) for b in "ACGT")
    probs = [seq.count(b) / total for b in "ACGT" if seq.count(b)]
    return -sum(p * math.log2(p) for p in probs)


MODELS = {"gc_content": gc_content, "cpg_oe": cpg_oe, "entropy": entropy}


def main(argv):
    if len(argv) != 4 or argv[1] not in MODELS:
        sys.stderr.write(__doc__)
        return 2
    model, fasta, out = argv[1:]
    with open(out, "w") as f:
        f.write(f"sequence\t{model}\n")
        for name, seq in read_fasta(fasta):
            f.write(f"{name}\t{MODELS[model](seq):.6f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
