/* eb_bench_stats — exact percentiles over kept samples, and plain-text/CSV/markdown tables. */
#include "eb_bench_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int eb_samples_add(eb_samples *s, int64_t us)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        int64_t *grown = realloc(s->us, cap * sizeof *grown);
        if (!grown)
            return -1;
        s->us = grown;
        s->cap = cap;
    }
    s->us[s->n++] = us;
    return 0;
}

int eb_samples_merge(eb_samples *into, eb_samples *from)
{
    for (size_t i = 0; i < from->n; i++)
        if (eb_samples_add(into, from->us[i]) != 0)
            return -1;
    into->errors += from->errors;
    eb_samples_free(from);
    return 0;
}

void eb_samples_free(eb_samples *s)
{
    free(s->us);
    memset(s, 0, sizeof *s);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double rank(const eb_samples *s, double q)
{
    size_t r = (size_t)ceil(q * (double)s->n);
    if (r < 1)
        r = 1;
    return (double)s->us[r - 1];
}

void eb_samples_summarise(eb_samples *s, eb_summary *out)
{
    memset(out, 0, sizeof *out);
    out->n = s->n;
    out->errors = s->errors;
    out->p99_us = out->p999_us = -1;
    if (s->n == 0) {
        out->mean_us = out->p50_us = out->p90_us = out->max_us = NAN;
        return;
    }
    qsort(s->us, s->n, sizeof *s->us, cmp_i64);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += (double)s->us[i];
    out->mean_us = sum / (double)s->n;
    out->p50_us = rank(s, 0.50);
    out->p90_us = rank(s, 0.90);
    if (s->n >= 1000)
        out->p99_us = rank(s, 0.99);
    if (s->n >= 10000)
        out->p999_us = rank(s, 0.999);
    out->max_us = (double)s->us[s->n - 1];
}

void eb_row_init(eb_row *row, const char *label)
{
    memset(row, 0, sizeof *row);
    snprintf(row->label, sizeof row->label, "%s", label);
}

void eb_row_add(eb_row *row, const char *name, double value)
{
    if (row->ncols >= EB_ROW_MAX_COLS)
        return;
    snprintf(row->names[row->ncols], sizeof row->names[0], "%s", name);
    row->values[row->ncols++] = value;
}

static void format_value(char *buf, size_t cap, double v)
{
    if (isnan(v) || v < 0)
        snprintf(buf, cap, "-");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, cap, "%.0f", v);
    else if (fabs(v) >= 100)
        snprintf(buf, cap, "%.1f", v);
    else
        snprintf(buf, cap, "%.3g", v);
}

void eb_rows_print_table(FILE *f, const char *title, const eb_row *rows, size_t n)
{
    if (n == 0)
        return;
    if (title)
        fprintf(f, "\n%s\n", title);
    int label_w = 5;
    for (size_t i = 0; i < n; i++)
        if ((int)strlen(rows[i].label) > label_w)
            label_w = (int)strlen(rows[i].label);
    fprintf(f, "%-*s", label_w, "case");
    for (int c = 0; c < rows[0].ncols; c++)
        fprintf(f, " %12s", rows[0].names[c]);
    fputc('\n', f);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%-*s", label_w, rows[i].label);
        for (int c = 0; c < rows[i].ncols; c++) {
            char buf[32];
            format_value(buf, sizeof buf, rows[i].values[c]);
            fprintf(f, " %12s", buf);
        }
        fputc('\n', f);
    }
}

void eb_rows_write_csv(FILE *f, const eb_row *rows, size_t n)
{
    if (n == 0)
        return;
    fprintf(f, "case");
    for (int c = 0; c < rows[0].ncols; c++)
        fprintf(f, ",%s", rows[0].names[c]);
    fputc('\n', f);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "\"%s\"", rows[i].label);
        for (int c = 0; c < rows[i].ncols; c++) {
            if (isnan(rows[i].values[c]) || rows[i].values[c] < 0)
                fprintf(f, ",");
            else
                fprintf(f, ",%.6g", rows[i].values[c]);
        }
        fputc('\n', f);
    }
}

void eb_rows_write_markdown(FILE *f, const char *title, const eb_row *rows, size_t n)
{
    if (n == 0)
        return;
    if (title)
        fprintf(f, "\n### %s\n\n", title);
    fprintf(f, "| case |");
    for (int c = 0; c < rows[0].ncols; c++)
        fprintf(f, " %s |", rows[0].names[c]);
    fprintf(f, "\n|---|");
    for (int c = 0; c < rows[0].ncols; c++)
        fprintf(f, "---:|");
    fputc('\n', f);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "| %s |", rows[i].label);
        for (int c = 0; c < rows[i].ncols; c++) {
            char buf[32];
            format_value(buf, sizeof buf, rows[i].values[c]);
            fprintf(f, " %s |", buf);
        }
        fputc('\n', f);
    }
}
