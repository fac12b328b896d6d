#!/usr/bin/env bash
# export-map.sh FM_H LIBFM_A — the linker version script of libfm.so: exports the functions the
# public header declares and defines nothing else as global (kernels, format internals and the
# other fm_ helpers the library's files share stay local). The names are the fm_ identifiers of
# FM_H that LIBFM_A defines as functions; an empty list is an error.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: scripts/export-map.sh include/fm.h build/libfm.a" >&2
    exit 2
fi
declared=$(grep -ow 'fm_[a-z0-9_]*' "$1" | sort -u)
defined=$(nm -g --defined-only "$2" | awk '$2 == "T" { print $3 }' | sort -u)
public=$(comm -12 <(printf '%s\n' "$declared") <(printf '%s\n' "$defined"))
[ -n "$public" ] || { echo "export-map.sh: no function of $1 is defined in $2" >&2; exit 1; }
echo "FM_0 {"
echo "  global:"
printf '    %s;\n' $public
echo "  local: *;"
echo "};"
