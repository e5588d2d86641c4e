#!/usr/bin/python3
"""Position-weight-matrix scanner: the best log-odds match of a motif in each DNA sequence.

usage: predict MOTIF.pwm INPUT.fa OUTPUT.tsv
MOTIF.pwm is the model: a position frequency matrix, one row per base (A, C, G, T), one column
per motif position. Writes one line per sequence:
name, best score (log2 odds against a uniform background, both strands), 0-based start, strand.
"""
import math
import sys

BASES = "ACGT"
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def read_pwm(path):
    rows = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in BASES:
                rows[parts[0]] = [float(x) for x in parts[1:]]
    width = len(rows["A"])
    pseudo = 0.01
    matrix = []
    for i in range(width):
        column = [rows[b][i] + pseudo for b in BASES]
        total = sum(column)
        matrix.append({b: math.log2(column[j] / total / 0.25) for j, b in enumerate(BASES)})
    return matrix


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


def best_hit(matrix, seq):
    width = len(matrix)
    best = (-math.inf, -1, "+")
    for strand, s in (("+", seq), ("-", seq.translate(COMPLEMENT)[::-1])):
        for start in range(len(s) - width + 1):
            window = s[start:start + width]
            if any(c not in BASES for c in window):
                continue
            score = sum(matrix[i][c] for i, c in enumerate(window))
            pos = start if strand == "+" else len(s) - start - width
            if score > best[0]:
                best = (score, pos, strand)
    return best


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    motif, fasta, out = argv[1:]
    matrix = read_pwm(motif)
    with open(out, "w") as f:
        f.write("sequence\tscore\tstart\tstrand\n")
        for name, seq in read_fasta(fasta):
            score, start, strand = best_hit(matrix, seq)
            f.write(f"{name}\t{score:.4f}\t{start}\t{strand}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
