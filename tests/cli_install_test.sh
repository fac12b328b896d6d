#!/usr/bin/env bash
# cli_install_test.sh — fm as an installed C library: `make install PREFIX=...` into a temporary
# prefix (the build folder of the fm given, the same compiler flags), then a program of a user's
# (tests/install/example.c) built against the installed copy with `pkg-config --cflags --libs fm`
# and run: shared (libfm.so, found through its soname) and static (libfm.a with
# `pkg-config --static`). Also: only the functions fm.h declares are exported, the installed fm
# runs, DESTDIR stages a tree, and `make uninstall` removes every file.
# Usage: tests/cli_install_test.sh BUILD/fm     Prints "N passed, N failed".
set -u
FM=$(realpath "${1:?usage: cli_install_test.sh BUILD/fm}")
src=$(dirname "$(realpath "$0")")/..
build=$(realpath --relative-to="$src" "$(dirname "$FM")")
tmp=$(mktemp -d /tmp/fm_install_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$src/tests/cli_lib.sh"
CC=${FM_CC:-gcc}
flags=()
[ -n "${FM_CFLAGS:-}" ] && flags=("CFLAGS=$FM_CFLAGS") # the flags the build folder was made with
prefix=$tmp/prefix
mk() { make -s -C "$src" --no-print-directory BUILD="$build" "${flags[@]}" "$@"; }

expect "make install" 0 "" -- mk install PREFIX="$prefix"
version=$(sed -n 's/^#define FM_VERSION "\(.*\)"/\1/p' "$src/include/fm.h")
major=${version%%.*}
for f in bin/fm lib/libfm.a "lib/libfm.so.$version" "lib/libfm.so.$major" lib/libfm.so include/fm.h lib/pkgconfig/fm.pc; do
    [ -e "$prefix/$f" ] && ok || bad "make install did not install $f"
done
readelf -d "$prefix/lib/libfm.so" | grep -q "SONAME.*\[libfm.so.$major\]" && ok || bad "libfm.so has no soname libfm.so.$major"
exported=$(nm -D --defined-only "$prefix/lib/libfm.so" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }')
others=$(grep -v '^fm_' <<<"$exported" | head -3)
[ -z "$others" ] && ok || bad "libfm.so exports functions outside fm_: $others"
grep -qx fm_model_init <<<"$exported" && grep -qx fm_version <<<"$exported" && ok ||
    bad "libfm.so does not export fm_model_init and fm_version"
grep -qx 'fm_k_gemm' <<<"$exported" && bad "libfm.so exports the internal kernel fm_k_gemm" || ok
expect "installed fm --version" 0 "^fm $version$" -- "$prefix/bin/fm" --version

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
expect "pkg-config --modversion" 0 "^$version$" -- pkg-config --modversion fm
mkdir -p "$tmp/model_shared" "$tmp/model_static"
# shared: the link line pkg-config gives, the library found at run time through its soname
if $CC ${FM_CFLAGS:-} "$src/tests/install/example.c" -o "$tmp/example_shared" $(pkg-config --cflags --libs fm) 2>"$tmp/cc.log"; then
    ok
    readelf -d "$tmp/example_shared" | grep -q "NEEDED.*\[libfm.so.$major\]" && ok || bad "example is not linked to libfm.so.$major"
    LD_LIBRARY_PATH=$prefix/lib expect "example (shared)" 0 "^example: version $version, vocabulary [0-9]+, .*loss" -- \
        "$tmp/example_shared" "$tmp/model_shared"
else
    bad "example does not build against the installed library:"; head -5 "$tmp/cc.log"
fi
# static: libfm.a and the private libraries pkg-config --static names
if $CC ${FM_CFLAGS:-} "$src/tests/install/example.c" -o "$tmp/example_static" $(pkg-config --cflags fm) \
    -Wl,-Bstatic -lfm -Wl,-Bdynamic $(pkg-config --static --libs fm | sed 's/ -lfm\b//') 2>"$tmp/cc.log"; then
    ok
    readelf -d "$tmp/example_static" | grep -q "libfm.so" && bad "the static example needs libfm.so" || ok
    expect "example (static)" 0 "^example: version $version, vocabulary [0-9]+, .*loss" -- \
        "$tmp/example_static" "$tmp/model_static"
else
    bad "example does not build statically against libfm.a:"; head -5 "$tmp/cc.log"
fi
[ -f "$tmp/model_shared/model.safetensors" ] && ok || bad "the example saved no model"

# DESTDIR: a staged tree whose fm.pc names the final prefix
expect "make install DESTDIR" 0 "" -- mk install DESTDIR="$tmp/stage" PREFIX=/opt/fm
[ -f "$tmp/stage/opt/fm/lib/libfm.a" ] && grep -qx 'prefix=/opt/fm' "$tmp/stage/opt/fm/lib/pkgconfig/fm.pc" && ok ||
    bad "DESTDIR=... PREFIX=/opt/fm: no staged tree naming /opt/fm"

expect "make uninstall" 0 "" -- mk uninstall PREFIX="$prefix"
left=$(find "$prefix" -type f -o -type l)
[ -z "$left" ] && ok || bad "make uninstall left: $left"
summary "cli_install_test"
