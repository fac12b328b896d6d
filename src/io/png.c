/*
 * png.c — writing 8-bit greyscale PNG files with libpng.
 *
 * What it is for: pictures of images (fm complete's grid of originals and completions). The file
 * is written through the atomic writer (temporary file, fsync, rename), so a failure leaves
 * nothing half-written at path. libpng reports errors by longjmp; they come back as FM_ERR_IO
 * naming the file.
 * Not for: reading PNGs (tests read them back with libpng themselves), colour.
 */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

static _Thread_local char png_error_text[256];

static void on_png_error(png_structp png, png_const_charp msg) {
    snprintf(png_error_text, sizeof png_error_text, "%s", msg);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

fm_status fm_png_write_gray(const char *path, const uint8_t *pixels, int width, int height) {
    if (!path || !pixels) return fm_fail(FM_ERR_ARG, "fm_png_write_gray: NULL argument");
    if (width < 1 || height < 1 || width > (1 << 20) || height > (1 << 20))
        return fm_fail(FM_ERR_ARG, "%s: picture size %d x %d", path, width, height);
    fm_atomic_file af;
    fm_status st = fm_atomic_open(&af, path);
    if (st) return st;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        fm_atomic_abort(&af);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory for libpng", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fm_atomic_abort(&af);
        return fm_fail(FM_ERR_IO, "%s: libpng: %s", path, png_error_text);
    }
    png_init_io(png, af.fp);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(pixels + (size_t)y * width));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (ferror(af.fp)) af.failed = 1;
    return fm_atomic_commit(&af);
}
