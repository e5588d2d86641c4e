#!/bin/sh
# The real GPU check of issue 17, for a host with NVIDIA GPUs, bubblewrap and the Debian mirror the
# zoo's debian: images come from (the host's apt sources). Run it from the repository root after
# `npm run build`:
#
#   scripts/gpu-check.sh [GRAPH]        (GRAPH: the CLI, default out/cli.js)
#
# It builds a tiny zoo in a temp directory: one image (busybox-static and libc6, so the host's
# glibc-linked nvidia-smi can run in it) and as many `resources: {gpu: 1}` tests as the host has
# GPUs (at most 4), each running `nvidia-smi -L > /output/gpus.txt` inside its bubblewrap sandbox,
# side by side (`--jobs`). Then, for each test, from the build report: the GPUs its sandbox listed
# must be exactly the GPU ids it held (`devices.gpu`), compared by UUID with the host's own `nvidia-smi -L` (CDI names and
# /dev/nvidiaN minors are host indices; inside the sandbox the held GPUs are numbered from 0).
# (That tests running at once hold distinct GPUs is proven without a GPU: test/unit/gpu.test.ts.)
# Exit 0 when every check holds; 1 with the reason otherwise; 2 when this host has no GPU.
set -eu
GRAPH=${1:-out/cli.js}
GRAPH=$(cd "$(dirname "$GRAPH")" && pwd)/$(basename "$GRAPH")
command -v nvidia-smi >/dev/null || { echo "gpu-check: nvidia-smi is not on PATH: no NVIDIA driver here" >&2; exit 2; }
host=$(nvidia-smi -L) || { echo "gpu-check: nvidia-smi -L failed on the host" >&2; exit 2; }
count=$(printf '%s\n' "$host" | grep -c '^GPU [0-9]*:' || true)
[ "$count" -gt 0 ] || { echo "gpu-check: the host lists no GPU" >&2; exit 2; }
tests=$count; [ "$tests" -gt 4 ] && tests=4
dir=$(mktemp -d "${TMPDIR:-/tmp}/graph-gpu-check-XXXXXX")
trap 'rm -rf "$dir"' EXIT
models=$(i=0; while [ $i -lt "$tests" ]; do printf 'm%s, ' $i; i=$((i + 1)); done)
cat > "$dir/images.yaml" <<EOF
version: 1
images:
  smi:
    debian: {packages: [busybox-static, libc6]}
EOF
cat > "$dir/models.yaml" <<EOF
version: 1
groups:
  gpu:
    image: smi
    models: [${models%, }]
    test: {command: [/bin/busybox, sh, -c, "nvidia-smi -L > /output/gpus.txt"], resources: {gpu: 1}}
EOF
echo "gpu-check: host GPUs:"; printf '%s\n' "$host" | sed 's/^/  /'
"$GRAPH" -C "$dir" plan --require-gpu
"$GRAPH" -C "$dir" build --require-gpu --jobs "$((tests + 1))" --report "$dir/report.json" || { echo "gpu-check: the build failed; logs in $dir/.graph/logs" >&2; cat "$dir"/.graph/logs/test* >&2 || true; exit 1; }
# One line per test: NODE<TAB>held ids (comma-separated), from the report.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  for (const n of r.nodes) if (n.kind === "test") console.log(`${n.id}\t${n.status}\t${((n.devices || {}).gpu || []).join(",")}`);
' "$dir/report.json" > "$dir/held.tsv"
status=0
while IFS="$(printf '\t')" read -r id st held; do
  [ "$st" = ran ] || { echo "gpu-check: $id did not run ($st)" >&2; status=1; continue; }
  [ -n "$held" ] || { echo "gpu-check: $id held no GPU (report has no devices.gpu)" >&2; status=1; continue; }
  out="$dir/.graph/out/test/$(printf '%s' "$id" | sed 's/%/%25/g; s#/#%2F#g')/output/gpus.txt"
  seen=$(sed -n 's/.*(UUID: \(GPU-[^)]*\)).*/\1/p' "$out" | sort)
  want=$(for g in $(printf '%s' "$held" | tr ',' ' '); do
    case $g in
      GPU-*) printf '%s\n' "$g" ;;
      *) printf '%s\n' "$host" | sed -n "s/^GPU $g: .*(UUID: \(GPU-[^)]*\)).*/\1/p" ;;
    esac
  done | sort)
  echo "gpu-check: $id held $held; its sandbox listed: $(printf '%s' "$seen" | tr '\n' ' ')"
  [ -n "$want" ] && [ "$seen" = "$want" ] || { echo "gpu-check: $id: nvidia-smi -L in the sandbox listed [$(printf '%s' "$seen" | tr '\n' ' ')], expected exactly [$(printf '%s' "$want" | tr '\n' ' ')]" >&2; status=1; }
done < "$dir/held.tsv"
[ $status -eq 0 ] && echo "gpu-check: ok: $tests test(s), each saw exactly the GPU it held"
exit $status
