/*
 * version.c — the library's version at run time, for a program to compare with the FM_VERSION
 * its fm.h gave it at build time (a shared libfm.so may be newer than the header).
 */
#include "fm.h"

const char *fm_version(void) { return FM_VERSION; }
