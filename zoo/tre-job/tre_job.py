#!/usr/bin/python3
"""A trusted-research-environment job: the image's own start-up command, no arguments.

Reads every FASTA file in /safe_data (read-only), writes per-sequence 3-mer counts to /scratch as a
working file, then the released result to /safe_outputs/kmer_summary.tsv: each sequence's length,
GC fraction, number of distinct 3-mers and its most frequent 3-mer (ties: the first in sorted order).
The paths are the TRE contract's; SAFE_DATA, SCRATCH and SAFE_OUTPUTS override them.
"""
import os
import sys

SAFE_DATA = os.environ.get("SAFE_DATA", "/safe_data")
SCRATCH = os.environ.get("SCRATCH", "/scratch")
SAFE_OUTPUTS = os.environ.get("SAFE_OUTPUTS", "/safe_outputs")
K = 3


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


def main():
    files = sorted(f for f in os.listdir(SAFE_DATA) if f.endswith((".fa", ".fasta")))
    if not files:
        sys.stderr.write(f"no FASTA file in {SAFE_DATA}\n")
        return 1
    records = [r for f in files for r in read_fasta(os.path.join(SAFE_DATA, f))]
    # Working data stays in scratch: only the summary is released to /safe_outputs.
    working = os.path.join(SCRATCH, "kmer_counts.tsv")
    with open(working, "w") as out:
        for name, seq in records:
            counts = {}
            for i in range(len(seq) - K + 1):
                counts[seq[i:i + K]] = counts.get(seq[i:i + K], 0) + 1
            for kmer in sorted(counts):
                out.write(f"{name}\t{kmer}\t{counts[kmer]}\n")
    counts = {}
    with open(working) as f:
        for line in f:
            name, kmer, n = line.rstrip("\n").split("\t")
            counts.setdefault(name, {})[kmer] = int(n)
    with open(os.path.join(SAFE_OUTPUTS, "kmer_summary.tsv"), "w") as out:
        out.write("sequence\tlength\tgc\tdistinct_3mers\ttop_3mer\ttop_count\n")
        for name, seq in records:
            c = counts.get(name, {})
            top = min(c, key=lambda k: (-c[k], k)) if c else ""
            gc = (seq.count("G") + seq.count("C")) / max(1, len(seq))
            out.write(f"{name}\t{len(seq)}\t{gc:.6f}\t{len(c)}\t{top}\t{c.get(top, 0)}\n")
    print(f"released {len(records)} rows to {SAFE_OUTPUTS}/kmer_summary.tsv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
