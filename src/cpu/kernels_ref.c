/*
 * kernels_ref.c — reference forms of every layer kernel, in double precision.
 *
 * What it is for: the tests' oracle. These are the most direct loops that follow the maths,
 * single-threaded, in double so that finite differences of them are accurate to ~1e-8 and the
 * fast float kernels can be compared against them. Not for production use: slow on purpose.
 */
#include <math.h>
#include <string.h>

#include "cpu/kernels.h"

void fm_ref_encoder_forward(double *out, const int *tokens, const double *wte,
                            const double *wpe, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int tok = tokens[b * T + t];
            for (int c = 0; c < C; c++)
                out[((size_t)b * T + t) * C + c] = wte[(size_t)tok * C + c] + wpe[(size_t)t * C + c];
        }
}

void fm_ref_encoder_backward(double *dwte, double *dwpe, const double *dout, const int *tokens,
                             int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int tok = tokens[b * T + t];
            const double *d = dout + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) {
                dwte[(size_t)tok * C + c] += d[c];
                dwpe[(size_t)t * C + c] += d[c];
            }
        }
}

void fm_ref_layernorm_forward(double *out, double *mean, double *rstd, const double *inp,
                              const double *w, const double *b, int N, int C, double eps) {
    for (int n = 0; n < N; n++) {
        const double *x = inp + (size_t)n * C;
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        double s = 1.0 / sqrt(v + eps);
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] = (x[c] - m) * s * w[c] + b[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

/* With xhat = (x - mean) * rstd and g = dout * w:
 * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). */
void fm_ref_layernorm_backward(double *dinp, double *dw, double *db, const double *dout,
                               const double *inp, const double *w, const double *mean,
                               const double *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const double *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        double g_mean = 0, gx_mean = 0;
        for (int c = 0; c < C; c++) {
            double xhat = (x[c] - mean[n]) * rstd[n];
            g_mean += d[c] * w[c];
            gx_mean += d[c] * w[c] * xhat;
        }
        g_mean /= C;
        gx_mean /= C;
        for (int c = 0; c < C; c++) {
            double xhat = (x[c] - mean[n]) * rstd[n];
            dw[c] += d[c] * xhat;
            db[c] += d[c];
            dinp[(size_t)n * C + c] += rstd[n] * (d[c] * w[c] - g_mean - xhat * gx_mean);
        }
    }
}

void fm_ref_linear_forward(double *out, const double *inp, const double *w, const double *bias,
                           int N, int IC, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int i = 0; i < IC; i++) s += inp[(size_t)n * IC + i] * w[(size_t)i * OC + o];
            out[(size_t)n * OC + o] = s;
        }
}

void fm_ref_linear_backward(double *dinp, double *dw, double *dbias, const double *dout,
                            const double *inp, const double *w, int N, int IC, int OC) {
    for (int n = 0; n < N; n++)
        for (int i = 0; i < IC; i++) {
            double s = 0;
            for (int o = 0; o < OC; o++) s += dout[(size_t)n * OC + o] * w[(size_t)i * OC + o];
            if (dinp) dinp[(size_t)n * IC + i] = s;
        }
    for (int i = 0; i < IC; i++)
        for (int o = 0; o < OC; o++)
            for (int n = 0; n < N; n++)
                dw[(size_t)i * OC + o] += inp[(size_t)n * IC + i] * dout[(size_t)n * OC + o];
    if (dbias)
        for (int o = 0; o < OC; o++)
            for (int n = 0; n < N; n++) dbias[o] += dout[(size_t)n * OC + o];
}

void fm_ref_attention_forward(double *out, double *att, const double *qkv, int B, int T, int C,
                              int H) {
    int hs = C / H;
    double scale = 1.0 / sqrt((double)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const double *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                double *a = att + (((size_t)b * H + h) * T + t) * T;
                double maxv = -INFINITY;
                for (int u = 0; u <= t; u++) {
                    const double *k = qkv + ((size_t)b * T + u) * 3 * C + C + h * hs;
                    double s = 0;
                    for (int i = 0; i < hs; i++) s += q[i] * k[i];
                    a[u] = s * scale;
                    if (a[u] > maxv) maxv = a[u];
                }
                double sum = 0;
                for (int u = 0; u <= t; u++) {
                    a[u] = exp(a[u] - maxv);
                    sum += a[u];
                }
                for (int u = 0; u <= t; u++) a[u] /= sum;
                double *o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) {
                    double s = 0;
                    for (int u = 0; u <= t; u++)
                        s += a[u] * qkv[((size_t)b * T + u) * 3 * C + 2 * C + h * hs + i];
                    o[i] = s;
                }
            }
}

void fm_ref_attention_backward(double *dqkv, const double *dout, const double *qkv,
                               const double *att, int B, int T, int C, int H) {
    int hs = C / H;
    double scale = 1.0 / sqrt((double)hs);
    memset(dqkv, 0, sizeof(double) * (size_t)B * T * 3 * C);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const double *a = att + (((size_t)b * H + h) * T + t) * T;
                const double *d = dout + ((size_t)b * T + t) * C + h * hs;
                const double *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                double *dq = dqkv + ((size_t)b * T + t) * 3 * C + h * hs;
                /* datt[u] = d . v_u; dv_u += a[u] d */
                double datt[T > 0 ? T : 1], dot = 0;
                for (int u = 0; u <= t; u++) {
                    const double *v = qkv + ((size_t)b * T + u) * 3 * C + 2 * C + h * hs;
                    double *dv = dqkv + ((size_t)b * T + u) * 3 * C + 2 * C + h * hs;
                    double s = 0;
                    for (int i = 0; i < hs; i++) {
                        s += d[i] * v[i];
                        dv[i] += a[u] * d[i];
                    }
                    datt[u] = s;
                    dot += a[u] * s;
                }
                /* softmax backward, then the scaled dot product q . k_u */
                for (int u = 0; u <= t; u++) {
                    double dpre = a[u] * (datt[u] - dot) * scale;
                    const double *k = qkv + ((size_t)b * T + u) * 3 * C + C + h * hs;
                    double *dk = dqkv + ((size_t)b * T + u) * 3 * C + C + h * hs;
                    for (int i = 0; i < hs; i++) {
                        dq[i] += dpre * k[i];
                        dk[i] += dpre * q[i];
                    }
                }
            }
}

#define GELU_SCALE 0.7978845608028654 /* sqrt(2 / pi) */

void fm_ref_gelu_forward(double *out, const double *inp, size_t N) {
    for (size_t i = 0; i < N; i++) {
        double x = inp[i];
        out[i] = 0.5 * x * (1.0 + tanh(GELU_SCALE * (x + 0.044715 * x * x * x)));
    }
}

void fm_ref_gelu_backward(double *dinp, const double *inp, const double *dout, size_t N) {
    for (size_t i = 0; i < N; i++) {
        double x = inp[i];
        double u = GELU_SCALE * (x + 0.044715 * x * x * x);
        double th = tanh(u);
        double du = GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x);
        dinp[i] = dout[i] * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du);
    }
}

double fm_ref_cross_entropy(const double *logits, const int *targets, const double *mask,
                            int N, int V, double *dlogits) {
    double total = 0, weight = 0;
    for (int n = 0; n < N; n++) weight += mask ? mask[n] : 1.0;
    for (int n = 0; n < N; n++) {
        const double *z = logits + (size_t)n * V;
        double m = mask ? mask[n] : 1.0;
        double maxv = z[0], sum = 0;
        for (int v = 1; v < V; v++) if (z[v] > maxv) maxv = z[v];
        for (int v = 0; v < V; v++) sum += exp(z[v] - maxv);
        double logz = maxv + log(sum);
        total += m * (logz - z[targets[n]]);
        if (dlogits)
            for (int v = 0; v < V; v++) {
                double p = exp(z[v] - logz);
                dlogits[(size_t)n * V + v] =
                    weight > 0 ? m * (p - (v == targets[n] ? 1.0 : 0.0)) / weight : 0.0;
            }
    }
    return weight > 0 ? total / weight : 0.0;
}
