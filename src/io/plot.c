/*
 * plot.c — line charts as SVG files, for loss curves and other training pictures.
 *
 * What it is for: a picture a person opens in a browser instead of reading metrics.jsonl.
 * Plain SVG 1.1 text, no dependencies. Not for: anything interactive.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"

#define W 800
#define H 480
#define LEFT 70
#define RIGHT 20
#define TOP 40
#define BOTTOM 55

/* Text content with XML's special characters escaped. */
static void add_escaped(fm_text *t, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fm_text_puts(t, "&lt;");
        else if (*s == '>') fm_text_puts(t, "&gt;");
        else if (*s == '&') fm_text_puts(t, "&amp;");
        else fm_text_append(t, s, 1);
    }
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about `want` ticks over span. */
static double tick_step(double span, int want) {
    double raw = span / want, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

fm_status fm_plot_svg(const char *path, const char *title, const char *x_label, const char *y_label,
                      const fm_series *series, int n_series, int log_y) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].xs[i], y = series[s].ys[i];
            if (!isfinite(x) || !isfinite(y) || (log_y && y <= 0)) continue;
            if (log_y) y = log10(y);
            x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, y), y1 = fmax(y1, y);
        }
    if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1; /* no points yet: empty axes */
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) y0 -= 0.5, y1 += 0.5;
    double pad = 0.05 * (y1 - y0);
    y0 -= pad, y1 += pad;
    double pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;
#define PX(x) (LEFT + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (TOP + (1.0 - ((y) - y0) / (y1 - y0)) * ph)
    fm_text t = {0};
    fm_text_printf(&t, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
            "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    fm_text_printf(&t, "<text x=\"%d\" y=\"24\" font-size=\"16\" text-anchor=\"middle\">", W / 2);
    add_escaped(&t, title);
    fm_text_printf(&t, "</text>\n");
    /* ticks and grid */
    double xs = tick_step(x1 - x0, 8), ys = tick_step(y1 - y0, 6);
    for (double x = ceil(x0 / xs) * xs; x <= x1 + 1e-9 * xs; x += xs)
        fm_text_printf(&t, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#eee\"/>"
                "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
            PX(x), TOP, PX(x), H - BOTTOM, PX(x), H - BOTTOM + 16, x);
    for (double y = ceil(y0 / ys) * ys; y <= y1 + 1e-9 * ys; y += ys)
        fm_text_printf(&t, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#eee\"/>"
                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n",
            LEFT, PY(y), W - RIGHT, PY(y), LEFT - 6, PY(y) + 4, log_y ? pow(10.0, y) : y);
    fm_text_printf(&t, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n", LEFT,
        TOP, pw, ph);
    fm_text_printf(&t, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">", LEFT + pw / 2, H - 12);
    add_escaped(&t, x_label);
    fm_text_printf(&t, "</text>\n<text transform=\"translate(16,%.0f) rotate(-90)\" text-anchor=\"middle\">", TOP + ph / 2);
    add_escaped(&t, y_label);
    fm_text_printf(&t, "%s</text>\n", log_y ? " (log scale)" : "");
    /* lines and legend */
    for (int s = 0; s < n_series; s++) {
        fm_text_printf(&t, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", series[s].color);
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].xs[i], y = series[s].ys[i];
            if (!isfinite(x) || !isfinite(y) || (log_y && y <= 0)) continue;
            fm_text_printf(&t, "%.1f,%.1f ", PX(x), PY(log_y ? log10(y) : y));
        }
        fm_text_printf(&t, "\"/>\n<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"3\" fill=\"%s\"/><text x=\"%d\" y=\"%d\">",
            W - RIGHT - 170, TOP + 14 + 18 * s, series[s].color, W - RIGHT - 150, TOP + 19 + 18 * s);
        add_escaped(&t, series[s].name);
        fm_text_printf(&t, "</text>\n");
    }
    fm_text_printf(&t, "</svg>\n");
#undef PX
#undef PY
    if (t.failed) {
        fm_free(t.data);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    }
    fm_atomic_file af;
    fm_status st = fm_atomic_open(&af, path);
    if (st == FM_OK) {
        fm_atomic_write(&af, t.data, t.len);
        st = fm_atomic_commit(&af);
    }
    fm_free(t.data);
    return st;
}
