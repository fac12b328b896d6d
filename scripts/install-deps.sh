#!/usr/bin/env bash
# install-deps.sh — installs the Debian packages fm needs to build and test, if they are missing.
# Usage: scripts/install-deps.sh [--torch]   (--torch adds python3-torch for `make test-torch`)
# Runs apt-get only when something is missing, with sudo when not root.
set -euo pipefail

need=()
[ -f /usr/include/cmocka.h ] || need+=(libcmocka-dev)
[ -f /usr/include/cjson/cJSON.h ] || need+=(libcjson-dev)
[ -f /usr/include/utf8proc.h ] || need+=(libutf8proc-dev)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v make >/dev/null || need+=(make)
# OpenMP runtime for gcc (libgomp) comes with gcc; check it links.
if command -v gcc >/dev/null && ! echo 'int main(void){return 0;}' | gcc -fopenmp -x c - -o /dev/null 2>/dev/null; then
    need+=(libgomp1)
fi
if [ "${1:-}" = "--torch" ] && ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    need+=(python3-torch)
fi
# the PyTorch peer of make bench needs the OpenMP build of OpenBLAS to be fair
if [ "${1:-}" = "--torch" ] && [ ! -e /usr/lib/x86_64-linux-gnu/openblas-openmp ]; then
    need+=(libopenblas0-openmp)
fi
# --fuzz: clang and its libFuzzer runtime, for `make fuzz`
if [ "${1:-}" = "--fuzz" ]; then
    command -v clang >/dev/null || need+=(clang)
    ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-dev)
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "installing: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
