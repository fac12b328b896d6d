/*
 * chat_page.c — the bytes of fm serve's chat page (src/serve/chat.html), built into the binary
 * so that `fm serve` needs no file beside it: the assembler's .incbin copies the HTML file into
 * read-only data at compile time, followed by a NUL. The HTML stays an ordinary file to edit;
 * the Makefile rebuilds this object when it changes. Paths are relative to the repository root,
 * where every build compiles (the Makefile, tests/tsan/run.sh). Linux/ELF with GNU as or clang.
 * Not for: serving it (server.c's route "/") or anything the page does (it is plain JavaScript).
 */
#include "serve/serve.h"

__asm__(".section .rodata\n"
        ".global serve_chat_page\n"
        ".type serve_chat_page, @object\n"
        ".balign 16\n"
        "serve_chat_page:\n"
        ".incbin \"src/serve/chat.html\"\n"
        ".byte 0\n"
        ".size serve_chat_page, . - serve_chat_page\n"
        ".previous\n");
