#!/usr/bin/env bash
# install-deps.sh — installs the Debian packages fm needs to build and test, if they are missing.
# Usage: scripts/install-deps.sh [--torch] [--fuzz] [--kjv] [--check]
#   --torch  python3-torch (and the OpenMP OpenBLAS) for `make test-torch` and `make bench`
#   --fuzz   clang and its libFuzzer runtime for `make fuzz`
#   --kjv    bible-kjv: the King James text of `make demo` and of the whole-text tokenizer test
#   --check  install nothing: print one line naming what is missing and exit 1 (0 when complete)
# Runs apt-get (update, then install) only when something is missing, with sudo when not root.
set -euo pipefail

torch=0 fuzz=0 kjv=0 check=0
for arg in "$@"; do
    case $arg in
    --torch) torch=1 ;;
    --fuzz) fuzz=1 ;;
    --kjv) kjv=1 ;;
    --check) check=1 ;;
    *) echo "install-deps.sh: unknown option '$arg' (--torch, --fuzz, --kjv, --check)" >&2; exit 2 ;;
    esac
done

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
if [ $torch -eq 1 ] && ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    need+=(python3-torch)
fi
# the PyTorch peer of make bench needs the OpenMP build of OpenBLAS to be fair
if [ $torch -eq 1 ] && [ ! -e /usr/lib/x86_64-linux-gnu/openblas-openmp ]; then
    need+=(libopenblas0-openmp)
fi
if [ $fuzz -eq 1 ]; then
    command -v clang >/dev/null || need+=(clang)
    ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-dev)
fi
if [ $kjv -eq 1 ]; then
    command -v bible >/dev/null || need+=(bible-kjv)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ $check -eq 1 ]; then
    echo "fm: missing Debian packages: ${need[*]} -- run 'make deps' (installs them with apt-get) or: apt-get install ${need[*]}" >&2
    exit 1
fi
echo "installing: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# a fresh machine's package lists are empty or stale: update before installing
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
