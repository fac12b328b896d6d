#!/usr/bin/env bash
# install-deps.sh — installs the Debian packages fm needs to build and test, if they are missing.
# Usage: scripts/install-deps.sh [--torch] [--fuzz] [--kjv] [--base] [--python] [--node] [--sklearn] [--mpi] [--vision] [--chromium] [--wrk] [--aarch64] [--qemu] [--list]
#   --torch  python3-torch (and the OpenMP OpenBLAS) for `make test-torch` and `make bench`
#   --fuzz   clang and its libFuzzer runtime for `make fuzz`
#   --kjv    bible-kjv: the King James text of `make demo` and of the whole-text tokenizer test
#   --base   the English text of `make base` and `make tasks`: bible-kjv, wordnet-base (WordNet's
#            glosses), dict-gcide (the GCIDE dictionary), fortunes and fortunes-min
#   --python python3 (standard library only): the test scripts that compare fm eval with the
#            PyTorch reference's committed results and check printed JSON (skipped without it)
#   --node   nodejs and npm: the chat template's check with npm's @huggingface/jinja
#            (tests/cli_chat_template_test.sh, skipped without node), and fm export gguf's check
#            in llama.cpp with npm's node-llama-cpp (tests/cli_gguf_test.sh; needs node >= 20)
#   --sklearn python3-sklearn: the bag-of-words baseline of scripts/classify-transfer.sh
#   --mpi    OpenMPI (libopenmpi-dev, openmpi-bin): data-parallel training under mpirun; the
#            Makefile then builds with MPI (docs/distributed.md) and tests/cli_mpi_test.sh runs
#   --vision dataset-fashion-mnist: the images of `make demo-vision` (scripts/demo-vision.sh)
#   --chromium chromium: fm serve's chat page in headless Chromium (tests/cli_serve_page_test.sh)
#   --wrk    wrk: the HTTP load test of fm serve (bench/serve_load.sh)
#   --aarch64 the cross build and its run under emulation (make test-aarch64, tests/cross/aarch64.sh):
#            gcc-aarch64-linux-gnu, qemu-user and the arm64 builds of the libraries above
#            (Debian multiarch: adds the arm64 architecture to dpkg first)
#   --qemu   qemu-user: the x86-64 binary run on emulated CPUs without AVX-512 (qemu-x86_64 -cpu
#            Haswell, qemu64) by tests/cli_cpu_emulated_test.sh (skipped without it)
#   --list   install nothing: print the missing packages on one line (nothing when complete); the
#            Makefile's check before compiling uses it
# FM_DEPS_ROOT (testing): look for the headers under this folder instead of /
# Runs apt-get (update, then install) only when something is missing, with sudo when not root.
set -euo pipefail

torch=0 fuzz=0 kjv=0 base=0 python=0 node=0 sklearn=0 mpi=0 vision=0 chromium=0 wrk=0 aarch64=0 qemu=0 list=0
for arg in "$@"; do
    case $arg in
    --torch) torch=1 ;;
    --fuzz) fuzz=1 ;;
    --kjv) kjv=1 ;;
    --python) python=1 ;;
    --sklearn) sklearn=1 ;;
    --node) node=1 ;;
    --mpi) mpi=1 ;;
    --vision) vision=1 ;;
    --chromium) chromium=1 ;;
    --wrk) wrk=1 ;;
    --aarch64) aarch64=1 ;;
    --qemu) qemu=1 ;;
    --base) base=1 kjv=1 ;;
    --list) list=1 ;;
    *) echo "install-deps.sh: unknown option '$arg' (--torch, --fuzz, --kjv, --base, --python, --node, --sklearn, --mpi, --vision, --chromium, --wrk, --aarch64, --qemu, --list)" >&2; exit 2 ;;
    esac
done

root=${FM_DEPS_ROOT:-}
need=()
[ -f "$root/usr/include/cmocka.h" ] || need+=(libcmocka-dev)
[ -f "$root/usr/include/cjson/cJSON.h" ] || need+=(libcjson-dev)
[ -f "$root/usr/include/utf8proc.h" ] || need+=(libutf8proc-dev)
[ -f "$root/usr/include/microhttpd.h" ] || need+=(libmicrohttpd-dev) # fm serve (src/serve/)
[ -f "$root/usr/include/zlib.h" ] || need+=(zlib1g-dev)          # IDX files, gzip or plain (src/io/idx.c)
[ -f "$root/usr/include/png.h" ] || need+=(libpng-dev)            # fm complete's PNG grid (src/io/png.c)
command -v curl >/dev/null || need+=(curl) # tests/cli_serve_test.sh
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v make >/dev/null || need+=(make)
command -v pkg-config >/dev/null || need+=(pkg-config) # tests/cli_install_test.sh builds against fm.pc
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
if [ $sklearn -eq 1 ] && ! /usr/bin/python3 -c 'import sklearn' 2>/dev/null; then
    need+=(python3-sklearn) # the bag-of-words baseline of scripts/classify-transfer.sh
fi
if [ $python -eq 1 ]; then
    command -v python3 >/dev/null || need+=(python3)
fi
if [ $node -eq 1 ]; then
    command -v node >/dev/null || need+=(nodejs)
    command -v npm >/dev/null || need+=(npm)
fi
if [ $mpi -eq 1 ]; then
    command -v mpicc >/dev/null || need+=(libopenmpi-dev)
    command -v mpirun >/dev/null || need+=(openmpi-bin)
fi
if [ $kjv -eq 1 ]; then
    command -v bible >/dev/null || need+=(bible-kjv)
fi
if [ $base -eq 1 ]; then
    [ -f /usr/share/wordnet/data.noun ] || need+=(wordnet-base)
    [ -f /usr/share/dictd/gcide.dict.dz ] || need+=(dict-gcide)
    [ -f /usr/share/games/fortunes/fortunes ] || need+=(fortunes-min)
    [ -f /usr/share/games/fortunes/linux ] || need+=(fortunes)
fi
if [ $vision -eq 1 ]; then
    [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
fi
if [ $chromium -eq 1 ]; then
    command -v chromium >/dev/null || need+=(chromium)
fi
if [ $wrk -eq 1 ]; then
    command -v wrk >/dev/null || need+=(wrk)
fi
if [ $aarch64 -eq 1 ]; then
    command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
    command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
    # the arm64 libraries the cross-built fm and its tests link and run with (headers are shared)
    for lib in libcmocka-dev:libcmocka.so libcjson-dev:libcjson.so libutf8proc-dev:libutf8proc.so \
        libmicrohttpd-dev:libmicrohttpd.so libpng-dev:libpng.so zlib1g-dev:libz.so libgomp1:libgomp.so.1; do
        [ -e "$root/usr/lib/aarch64-linux-gnu/${lib#*:}" ] || need+=("${lib%%:*}:arm64")
    done
fi
if [ $qemu -eq 1 ]; then
    command -v qemu-x86_64 >/dev/null || need+=(qemu-user)
fi
if [ $list -eq 1 ]; then
    [ ${#need[@]} -eq 0 ] || echo "${need[*]}"
    exit 0
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "installing: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# arm64 packages (--aarch64) install beside the native ones once dpkg knows the architecture
if [[ " ${need[*]}" == *:arm64* ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $sudo dpkg --add-architecture arm64
fi
# a fresh machine's package lists are empty or stale: update before installing
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
