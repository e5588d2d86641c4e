#!/usr/bin/python3
"""Write the weights of the zoo's Basset-shaped CNN, deterministically, as a NumPy .npz archive.

usage: make_weights.py OUT.npz

The network (see predict.py): one-hot DNA (4 x 64) -> 3 x (conv1d, ReLU, max-pool 2) -> fully
connected 256 -> 32, ReLU -> 32 -> 5 tasks, sigmoid. Weights are drawn from a fixed-seed Gaussian
(He scaling) with the standard library only, so the file's bytes depend on nothing but this
script: the same bytes on any machine and Python 3 version (random.Random's Mersenne Twister and
gauss() are stable). The archive is what numpy.savez writes: one uncompressed .npy (format 1.0,
little-endian float32, C order) per tensor, named after the PyTorch state_dict keys, with fixed
zip timestamps. It loads with numpy.load(allow_pickle=False): no pickle is ever trusted.
"""
import random
import struct
import sys
import zipfile

SEED = 20261130
# (state_dict key, shape, fan-in) in the network's order.
TENSORS = [
    ("conv1.weight", (16, 4, 7), 4 * 7), ("conv1.bias", (16,), None),
    ("conv2.weight", (32, 16, 5), 16 * 5), ("conv2.bias", (32,), None),
    ("conv3.weight", (32, 32, 3), 32 * 3), ("conv3.bias", (32,), None),
    ("fc1.weight", (32, 256), 256), ("fc1.bias", (32,), None),
    ("fc2.weight", (5, 32), 32), ("fc2.bias", (5,), None),
]


def npy(shape, values):
    """A .npy file, format 1.0 (NEP 1): magic, header length, a dict literal padded to 64 bytes."""
    dims = "(%s)" % (", ".join(map(str, shape)) + ("," if len(shape) == 1 else ""))
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % dims
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + struct.pack("<%df" % len(values), *values)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    rng = random.Random(SEED)
    with zipfile.ZipFile(argv[1], "w", zipfile.ZIP_STORED) as z:
        for name, shape, fan_in in TENSORS:
            n = 1
            for d in shape:
                n *= d
            scale = (2.0 / fan_in) ** 0.5 if fan_in else 0.1
            values = [rng.gauss(0.0, scale) for _ in range(n)]
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, npy(shape, values))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
