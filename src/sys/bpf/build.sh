#!/usr/bin/env bash
# Rebuild the committed BPF object from its source: sockwarden.bpf.c -> sockwarden.bpf.o.
# Needs clang and libbpf's headers (Debian: clang libbpf-dev). The object is committed so
# that building sockwarden needs only Rust; CI rebuilds it and fails if it differs.
# -ffile-prefix-map keeps the build directory out of the debug info (BTF needs -g).
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-sockwarden.bpf.o}
clang -O2 -g -target bpf -mcpu=v3 -Wall -Werror \
    -ffile-prefix-map="$PWD"=. \
    -c sockwarden.bpf.c -o "$out"
