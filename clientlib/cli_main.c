/* embroker — command-line client: health, embeddings, scans and catalogue maintenance; JSON on
 * stdout, one-line errors on stderr.
 *
 *   embroker health
 *   embroker embed-image FILE...      (one request with every file; format from the bytes)
 *   embroker embed-text TEXT...       (one request with every text)
 *   embroker scan [--image FILE] [--text TEXT] [--template T] [--source-type S] [-k N]
 *                 [--store --product-id ID] [--image-weight W] [--text-weight W] [--embedding]
 *                 [--table]
 *   embroker delete --product-id ID [--template T]
 *   embroker migrate [--db URL] --image-dim N --text-dim M [--sql-dir DIR]
 *   embroker backfill --input FILE.jsonl|FILE.csv | --sql QUERY [--db URL] [...]
 *
 * Flags (also EMBROKER_* environment and a config file, eb_config.h): --run-dir DIR,
 * --broker ENDPOINT, --model NAME (default siglip for images, qwen3 for texts), --inline (no
 * shared memory), --timeout-ms N, --heartbeat-interval-ms N, --no-embedding (omit the vectors).
 * Exit status: 0 when everything succeeded, 1 when the request, an input, a scan's search or a
 * backfill row failed, 2 for usage errors, 130 for a backfill stopped by SIGINT/SIGTERM (its
 * checkpoint is saved). docs/client.md describes every command. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "eb_backfill.h"
#include "eb_backfill_input.h"
#include "eb_backfill_state.h"
#include "eb_config.h"
#include "eb_hash.h"
#include "eb_log.h"
#include "eb_migrate.h"
#include "embroker.h"

enum { MAX_ARGS = 256 };

static void usage(FILE *f)
{
    fprintf(f,
            "usage: embroker [flags] health\n"
            "       embroker [flags] embed-image FILE...\n"
            "       embroker [flags] embed-text TEXT...\n"
            "       embroker [flags] scan [--image FILE] [--text TEXT] [--template T]\n"
            "                [--source-type S] [-k N] [--store --product-id ID]\n"
            "                [--image-weight W] [--text-weight W] [--embedding] [--table]\n"
            "                [--image-model M] [--text-model M] [--no-client-hash]\n"
            "       embroker [flags] delete --product-id ID [--template T]\n"
            "       embroker migrate [--db URL] --image-dim N --text-dim M [--sql-dir DIR]\n"
            "       embroker [flags] backfill --input FILE.jsonl|FILE.csv | --sql QUERY [--db URL]\n"
            "                [--template-default T] [--source-type S] [--batch N]\n"
            "                [--checkpoint FILE] [--max-attempts N] [--request-timeout-ms N]\n"
            "                [--image-model M] [--text-model M] [--quiet]\n"
            "flags: --run-dir DIR | --broker ENDPOINT, --model NAME, --inline,\n"
            "       --timeout-ms N, --heartbeat-interval-ms N, --no-embedding,\n"
            "       --output-dim N (truncate and renormalise),\n"
            "       --instruction TASK (texts: embed as \"Instruct: TASK\\nQuery:TEXT\")\n"
            "       --send-hash (embed-*: send the client's content hash)\n"
            "--db defaults to $EMBROKER_PG_URL. docs/client.md has the details.\n");
}

/* JSON string literal of s (UTF-8 passes through; control characters escaped). */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void print_timing(FILE *f, const char *name, int64_t us, bool *first)
{
    if (us < 0)
        return;
    fprintf(f, "%s\"%s\": %lld", *first ? "" : ", ", name, (long long)us);
    *first = false;
}

static void print_request(FILE *f, const embroker_request_t *req, char **labels,
                          bool with_embedding)
{
    eb_status st = embroker_request_status(req);
    fprintf(f, "{\"id\": %llu, \"status\": ", (unsigned long long)embroker_request_id(req));
    json_str(f, eb_status_str(st));
    if (st != EB_OK) {
        fprintf(f, ", \"error\": ");
        json_str(f, embroker_request_error(req));
    }
    fprintf(f, ", \"shm\": %s", embroker_request_used_shm(req) ? "true" : "false");
    const embroker_timings_t *t = embroker_request_timings(req);
    bool first = true;
    fprintf(f, ", \"timings_us\": {");
    print_timing(f, "queue", t->queue_us, &first);
    print_timing(f, "copy", t->copy_us, &first);
    print_timing(f, "hash", t->hash_us, &first);
    print_timing(f, "cache", t->cache_us, &first);
    print_timing(f, "decode", t->decode_us, &first);
    print_timing(f, "preprocess", t->preprocess_us, &first);
    print_timing(f, "infer", t->infer_us, &first);
    print_timing(f, "search", t->search_us, &first);
    print_timing(f, "store_enqueue", t->store_enqueue_us, &first);
    print_timing(f, "total", t->total_us, &first);
    print_timing(f, "client_hash", t->client_hash_us, &first);
    print_timing(f, "client_copy", t->client_copy_us, &first);
    print_timing(f, "client_total", t->client_total_us, &first);
    fprintf(f, "}, \"results\": [");
    for (size_t i = 0; i < embroker_request_count(req); i++) {
        const embroker_result_t *r = embroker_request_result(req, i);
        fprintf(f, "%s\n  {\"input\": ", i ? "," : "");
        json_str(f, labels[i]);
        if (!r) {
            fprintf(f, ", \"status\": \"timeout\"}");
            continue;
        }
        fprintf(f, ", \"status\": ");
        json_str(f, eb_status_str(r->status));
        if (r->status != EB_OK) {
            fprintf(f, ", \"error\": ");
            json_str(f, r->message);
        }
        if (r->has_hash) {
            char hex[2 * EB_HASH_LEN + 1];
            fprintf(f, ", \"hash\": \"%s\"", eb_hex(r->hash, EB_HASH_LEN, hex));
        }
        fprintf(f, ", \"worker\": ");
        json_str(f, r->worker);
        fprintf(f, ", \"model_rev\": ");
        json_str(f, r->model_rev);
        fprintf(f, ", \"cached\": %s, \"dims\": %u", r->cached ? "true" : "false", r->dims);
        if (with_embedding && r->embedding) {
            fprintf(f, ", \"embedding\": [");
            for (uint32_t k = 0; k < r->dims; k++)
                fprintf(f, "%s%.9g", k ? ", " : "", (double)r->embedding[k]);
            fprintf(f, "]");
        }
        fprintf(f, "}");
    }
    fprintf(f, "\n]}\n");
}

static bool request_ok(const embroker_request_t *req)
{
    if (embroker_request_status(req) != EB_OK)
        return false;
    for (size_t i = 0; i < embroker_request_count(req); i++) {
        const embroker_result_t *r = embroker_request_result(req, i);
        if (!r || r->status != EB_OK)
            return false;
    }
    return true;
}

/* ---- scan ------------------------------------------------------------------------------ */

static void print_scan(FILE *f, const embroker_request_t *req, const char *image_label,
                       const char *text_label, bool with_embedding)
{
    eb_status st = embroker_request_status(req);
    fprintf(f, "{\"id\": %llu, \"status\": ", (unsigned long long)embroker_request_id(req));
    json_str(f, eb_status_str(st));
    if (st != EB_OK) {
        fprintf(f, ", \"error\": ");
        json_str(f, embroker_request_error(req));
    }
    size_t n = 0;
    const embroker_match_t *m = embroker_request_matches(req, &n);
    fprintf(f, ", \"matches\": [");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s\n  {\"product_id\": ", i ? "," : "");
        json_str(f, m[i].product_id);
        fprintf(f, ", \"score\": %.9g, \"template\": ", m[i].score);
        json_str(f, m[i].template_name);
        fprintf(f, ", \"source_type\": ");
        json_str(f, m[i].source_type);
        fprintf(f, "}");
    }
    fprintf(f, "%s]", n ? "\n" : "");
    const char *msg = NULL;
    eb_status se = embroker_request_search_error(req, &msg);
    if (se != EB_OK && st == EB_OK) {
        fprintf(f, ", \"search_error\": {\"status\": ");
        json_str(f, eb_status_str(se));
        fprintf(f, ", \"message\": ");
        json_str(f, msg);
        fprintf(f, "}");
    }
    const char *store_id = embroker_request_store_id(req);
    if (store_id) {
        fprintf(f, ", \"store_id\": ");
        json_str(f, store_id);
    }
    fprintf(f, ", ");
    /* results and timings in the same shape as the embed commands */
    char *labels[2];
    size_t k = 0;
    if (image_label)
        labels[k++] = (char *)image_label;
    if (text_label)
        labels[k++] = (char *)text_label;
    /* print_request prints "{...}": reuse it without its opening brace by printing into a
     * memory stream */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (mem) {
        print_request(mem, req, labels, with_embedding);
        fclose(mem);
        /* skip {"id": N, "status": "…"[, "error": …], and keep from "shm" on */
        const char *from = buf ? strstr(buf, "\"shm\"") : NULL;
        if (from)
            fputs(from, f);
        else
            fputs("\"results\": []}\n", f);
        free(buf);
    }
}

static const char *stage_str(int64_t us, char *buf, size_t cap)
{
    if (us < 0)
        snprintf(buf, cap, "-");
    else if (us >= 10000)
        snprintf(buf, cap, "%.1f ms", (double)us / 1000.0);
    else
        snprintf(buf, cap, "%lld us", (long long)us);
    return buf;
}

static void print_scan_table(FILE *f, const embroker_request_t *req, const char *image_label,
                             const char *text_label)
{
    eb_status st = embroker_request_status(req);
    if (st != EB_OK) {
        fprintf(f, "scan failed: %s: %s\n", eb_status_str(st), embroker_request_error(req));
        return;
    }
    size_t n = 0;
    const embroker_match_t *m = embroker_request_matches(req, &n);
    const char *msg = NULL;
    eb_status se = embroker_request_search_error(req, &msg);
    if (se != EB_OK) {
        fprintf(f, "search unavailable: %s: %s\n", eb_status_str(se), msg);
    } else if (n == 0) {
        fprintf(f, "no matches\n");
    } else {
        fprintf(f, "%4s  %-10s  %-32s  %-20s  %s\n", "rank", "score", "product_id", "template",
                "source_type");
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%4zu  %-10.6f  %-32s  %-20s  %s\n", i + 1, m[i].score, m[i].product_id,
                    m[i].template_name, m[i].source_type);
    }
    const char *labels[2];
    size_t k = 0;
    if (image_label)
        labels[k++] = image_label;
    if (text_label)
        labels[k++] = text_label;
    for (size_t i = 0; i < embroker_request_count(req) && i < k; i++) {
        const embroker_result_t *r = embroker_request_result(req, i);
        char hex[2 * EB_HASH_LEN + 1] = "";
        if (r && r->has_hash)
            eb_hex(r->hash, EB_HASH_LEN, hex);
        fprintf(f, "input %s: %s", labels[i],
                !r ? "no result" : r->status != EB_OK ? eb_status_str(r->status)
                                 : r->cached ? "cache hit" : "cache miss");
        if (r && r->status != EB_OK)
            fprintf(f, " (%s)", r->message);
        if (hex[0])
            fprintf(f, ", hash %.16s…", hex);
        if (r && r->dims)
            fprintf(f, ", %u dims", r->dims);
        fputc('\n', f);
    }
    const char *store_id = embroker_request_store_id(req);
    if (store_id)
        fprintf(f, "stored as %s\n", store_id);
    const embroker_timings_t *t = embroker_request_timings(req);
    struct {
        const char *name;
        int64_t us;
    } stages[] = {{"client hash", t->client_hash_us}, {"client copy", t->client_copy_us},
                  {"hash", t->hash_us},
                  {"cache", t->cache_us},             {"queue", t->queue_us},
                  {"copy", t->copy_us},               {"decode", t->decode_us},
                  {"preprocess", t->preprocess_us},   {"infer", t->infer_us},
                  {"search", t->search_us},           {"store enqueue", t->store_enqueue_us},
                  {"total (broker)", t->total_us},    {"total (client)", t->client_total_us}};
    fprintf(f, "stages:\n");
    for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++) {
        char b[32];
        if (stages[i].us >= 0)
            fprintf(f, "  %-15s %10s\n", stages[i].name, stage_str(stages[i].us, b, sizeof b));
    }
}

static uint8_t *slurp(const char *path, size_t *len, char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(err, err_len, "cannot read %s: %s", path,
                 fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    uint8_t *buf = malloc(n ? n : 1);
    while (buf && got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) {
            free(buf);
            buf = NULL;
        } else {
            got += (size_t)r;
        }
    }
    close(fd);
    if (!buf)
        snprintf(err, err_len, "cannot read %s", path);
    *len = n;
    return buf;
}

/* A double flag in [0, 1000], or -1 when unset. */
static bool get_weight(const eb_config *cfg, const char *key, double *out, char *err,
                       size_t err_len)
{
    const char *v = eb_config_get(cfg, key, NULL);
    *out = -1;
    if (!v)
        return true;
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < 0 || d > 1000) {
        snprintf(err, err_len, "--%s %s is not a number in [0, 1000]", key, v);
        return false;
    }
    *out = d;
    return true;
}

static int cmd_scan(embroker_t *eb, const eb_config *cfg, int timeout_ms)
{
    char err[1024];
    const char *image_path = eb_config_get(cfg, "image", NULL);
    const char *text = eb_config_get(cfg, "text", NULL);
    if (!image_path && !text) {
        fprintf(stderr, "embroker: scan needs --image FILE, --text TEXT or both\n");
        return 2;
    }
    embroker_scan_options_t o;
    embroker_scan_options_default(&o);
    int64_t k = 0, deadline = 0;
    if (eb_config_get_int(cfg, "k", 0, 1, 100000, &k, err, sizeof err) != EB_OK ||
        eb_config_get_int(cfg, "deadline_ms", 0, 0, 3600000, &deadline, err, sizeof err) !=
            EB_OK ||
        !get_weight(cfg, "image_weight", &o.image_weight, err, sizeof err) ||
        !get_weight(cfg, "text_weight", &o.text_weight, err, sizeof err)) {
        fprintf(stderr, "embroker: %s\n", err);
        return 2;
    }
    o.k = (uint32_t)k;
    o.deadline_ms = (uint32_t)deadline;
    o.template_name = eb_config_get(cfg, "template", NULL);
    o.source_type = eb_config_get(cfg, "source_type", NULL);
    o.store = eb_config_get_bool(cfg, "store", false);
    o.product_id = eb_config_get(cfg, "product_id", NULL);
    o.return_embedding = eb_config_get_bool(cfg, "embedding", false);
    o.image_model = eb_config_get(cfg, "image_model", eb_config_get(cfg, "model", NULL));
    o.text_model = eb_config_get(cfg, "text_model", NULL);
    o.no_client_hash = eb_config_get_bool(cfg, "no_client_hash", false);
    o.bulk = eb_config_get_bool(cfg, "bulk", false);
    if (o.store && !o.product_id) {
        fprintf(stderr, "embroker: scan --store needs --product-id ID\n");
        return 2;
    }
    uint8_t *bytes = NULL;
    size_t len = 0;
    embroker_input_t img = {.kind = EMBROKER_INPUT_IMAGE, .format = EMBROKER_FORMAT_AUTO};
    if (image_path) {
        bytes = slurp(image_path, &len, err, sizeof err);
        if (!bytes) {
            fprintf(stderr, "embroker: scan: %s\n", err);
            return 1;
        }
        img.bytes = bytes;
        img.len = len;
    }
    embroker_request_t *req = NULL;
    eb_status st = embroker_submit_scan(eb, image_path ? &img : NULL, text, &o, &req, err,
                                        sizeof err);
    free(bytes);
    if (st != EB_OK) {
        fprintf(stderr, "embroker: scan not sent: %s: %s\n", eb_status_str(st), err);
        return st == EB_ERR_INVALID ? 2 : 1;
    }
    int rc = 0;
    if (embroker_wait(eb, req, timeout_ms) != EB_OK) {
        fprintf(stderr, "embroker: scan: no reply within %d ms (--timeout-ms); is a worker "
                "serving the model?\n", timeout_ms);
        embroker_request_free(&req); /* cancels it */
        return 1;
    }
    bool table = eb_config_get_bool(cfg, "table", false);
    if (table)
        print_scan_table(stdout, req, image_path, text ? "text" : NULL);
    else
        print_scan(stdout, req, image_path, text, o.return_embedding);
    const char *msg = NULL;
    eb_status se = embroker_request_search_error(req, &msg);
    if (!request_ok(req)) {
        fprintf(stderr, "embroker: scan: %s %s\n", eb_status_str(embroker_request_status(req)),
                embroker_request_error(req));
        rc = 1;
    } else if (se != EB_OK) {
        fprintf(stderr, "embroker: scan answered without search: %s: %s\n", eb_status_str(se),
                msg);
        rc = 1;
    }
    embroker_request_free(&req);
    return rc;
}

/* ---- delete ----------------------------------------------------------------------------- */

static int cmd_delete(embroker_t *eb, const eb_config *cfg)
{
    const char *product = eb_config_get(cfg, "product_id", NULL);
    const char *tmpl = eb_config_get(cfg, "template", NULL);
    if (!product) {
        fprintf(stderr, "embroker: delete needs --product-id ID\n");
        return 2;
    }
    char err[1024];
    uint64_t n = 0;
    eb_status st = embroker_delete(eb, product, tmpl, &n, err, sizeof err);
    if (st != EB_OK) {
        fprintf(stderr, "embroker: %s\n", err);
        return 1;
    }
    printf("{\"product_id\": ");
    json_str(stdout, product);
    if (tmpl) {
        printf(", \"template\": ");
        json_str(stdout, tmpl);
    }
    printf(", \"deleted\": %" PRIu64 "}\n", n);
    return 0;
}

/* ---- migrate ---------------------------------------------------------------------------- */

/* The migrations recorded in the database as (version, name) lines into *out (malloc'ed, caller
 * frees), "" when none or unreachable. */
static char *recorded_migrations(const char *db)
{
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    if (!mem)
        return NULL;
    PGconn *pg = PQconnectdb(db);
    if (PQstatus(pg) == CONNECTION_OK) {
        PQsetNoticeProcessor(pg, NULL, NULL);
        PGresult *r = PQexec(pg, "SELECT version, name FROM schema_migrations ORDER BY version");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            for (int i = 0; i < PQntuples(r); i++)
                fprintf(mem, "%s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
        PQclear(r);
    }
    PQfinish(pg);
    fclose(mem);
    return out;
}

static void noop_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int cmd_migrate(const eb_config *cfg)
{
    char err[2048];
    const char *db = eb_config_get(cfg, "db", eb_config_get(cfg, "pg_url", NULL));
    if (!db) {
        fprintf(stderr, "embroker: migrate needs --db URL (or EMBROKER_PG_URL)\n");
        return 2;
    }
    int64_t image_dim = 0, text_dim = 0;
    if (eb_config_get_int(cfg, "image_dim", -1, 0, 65536, &image_dim, err, sizeof err) != EB_OK ||
        eb_config_get_int(cfg, "text_dim", -1, 0, 65536, &text_dim, err, sizeof err) != EB_OK) {
        fprintf(stderr, "embroker: %s\n", err);
        return 2;
    }
    if (image_dim < 0 || text_dim < 0) {
        fprintf(stderr, "embroker: migrate needs --image-dim N and --text-dim M (the dimensions "
                "of the configured image and text models, e.g. 768 and 1024; --text-dim 0 for "
                "images only)\n");
        return 2;
    }
    const char *sql_dir = eb_config_get(cfg, "sql_dir", NULL);
    if (!sql_dir)
        sql_dir = eb_migrate_sql_dir();
    char sql_real[4096];
    if (realpath(sql_dir, sql_real))
        sql_dir = sql_real;
    /* Fail clearly on an unreachable database before anything else. */
    PGconn *pg = PQconnectdb(db);
    if (PQstatus(pg) != CONNECTION_OK) {
        char *msg = PQerrorMessage(pg);
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
            msg[--n] = '\0';
        fprintf(stderr, "embroker: migrate: cannot connect to the database: %s\n"
                "  (check --db / EMBROKER_PG_URL and that PostgreSQL is running)\n", msg);
        PQfinish(pg);
        return 1;
    }
    PQsetNoticeProcessor(pg, noop_notice, NULL);
    PQfinish(pg);
    char *before = recorded_migrations(db);
    unsigned applied = 0;
    eb_status st = eb_migrate_run_dir(db, sql_dir, (uint32_t)image_dim, (uint32_t)text_dim,
                                      &applied, err, sizeof err);
    if (st != EB_OK) {
        fprintf(stderr, "embroker: migrate failed (%s): %s\n", eb_status_str(st), err);
        free(before);
        return 1;
    }
    char *after = recorded_migrations(db);
    eb_table_dims dims;
    memset(&dims, 0, sizeof dims);
    char derr[512];
    bool have_dims = eb_migrate_read_dims(db, &dims, derr, sizeof derr) == EB_OK;
    printf("{\"sql_dir\": ");
    json_str(stdout, sql_dir);
    printf(", \"applied_now\": %u, \"migrations\": [", applied);
    int k = 0;
    for (char *line = after, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *space = strchr(line, ' ');
        if (!space)
            continue;
        *space = '\0';
        char key[512];
        snprintf(key, sizeof key, "%s %s\n", line, space + 1);
        bool now = !before || !strstr(before, key);
        printf("%s{\"version\": %s, \"name\": ", k++ ? ", " : "", line);
        json_str(stdout, space + 1);
        printf(", \"applied_now\": %s}", now ? "true" : "false");
    }
    printf("]");
    if (have_dims && dims.exists)
        printf(", \"table\": {\"image_dim\": %u, \"text_dim\": %u, \"combined_dim\": %u, "
               "\"halfvec_index\": %s}",
               dims.image, dims.text, dims.combined, dims.halfvec_index ? "true" : "false");
    printf("}\n");
    fprintf(stderr, "embroker: migrate: %u migration%s applied now (%s)\n", applied,
            applied == 1 ? "" : "s", applied ? "see \"migrations\"" : "already up to date");
    free(before);
    free(after);
    return 0;
}

/* ---- backfill --------------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static eb_status file_source_next(void *ctx, eb_backfill_row *row, char *err, size_t err_len)
{
    return eb_backfill_reader_next(ctx, row, err, err_len);
}

/* Rows of a PostgreSQL query, one at a time (single-row mode: the whole result never sits in
 * memory). Blocking libpq is fine here: the client library heartbeats from its own thread. */
typedef struct sql_source {
    PGconn *pg;
    int col[4];
    bool cols_known, ended;
    uint64_t next_ordinal;
} sql_source;

static eb_status sql_source_next(void *ctx, eb_backfill_row *row, char *err, size_t err_len)
{
    sql_source *q = ctx;
    if (q->ended)
        return EB_ERR_NOT_FOUND;
    for (;;) {
        PGresult *r = PQgetResult(q->pg);
        if (!r) {
            q->ended = true;
            return EB_ERR_NOT_FOUND;
        }
        ExecStatusType t = PQresultStatus(r);
        if (t == PGRES_TUPLES_OK || t == PGRES_COMMAND_OK) {
            PQclear(r); /* the end of the rows; drain to NULL */
            continue;
        }
        if (t != PGRES_SINGLE_TUPLE) {
            snprintf(err, err_len, "the backfill query failed: %s", PQresultErrorMessage(r));
            size_t n = strlen(err);
            while (n && err[n - 1] == '\n')
                err[--n] = '\0';
            PQclear(r);
            return EB_ERR_IO;
        }
        if (!q->cols_known) {
            for (int c = 0; c < 4; c++)
                q->col[c] = -1;
            for (int i = 0; i < PQnfields(r); i++) {
                int c = eb_backfill_column_of(PQfname(r, i));
                if (c >= 0 && q->col[c] < 0)
                    q->col[c] = i;
            }
            q->cols_known = true;
            if (q->col[0] < 0 || (q->col[2] < 0 && q->col[3] < 0)) {
                snprintf(err, err_len, "the backfill query must return a product_id column and "
                         "a text or image column (also template unless --template-default); "
                         "alias them: SELECT \"ProductId\" AS product_id, …");
                PQclear(r);
                return EB_ERR_INVALID;
            }
        }
        row->ordinal = q->next_ordinal++;
        char **dst[4] = {&row->product_id, &row->template_name, &row->text, &row->image};
        for (int c = 0; c < 4; c++)
            if (q->col[c] >= 0 && !PQgetisnull(r, 0, q->col[c]) && *PQgetvalue(r, 0, q->col[c]))
                *dst[c] = strdup(PQgetvalue(r, 0, q->col[c]));
        PQclear(r);
        return EB_OK;
    }
}

static int cmd_backfill(embroker_t *eb, const eb_config *cfg)
{
    char err[2048];
    const char *input = eb_config_get(cfg, "input", NULL);
    const char *sql = eb_config_get(cfg, "sql", NULL);
    if (!input == !sql) {
        fprintf(stderr, "embroker: backfill needs exactly one of --input FILE (.jsonl or .csv) "
                "and --sql QUERY\n");
        return 2;
    }
    int64_t batch = 8, attempts = 4, timeout = 120000, deadline = 0;
    if (eb_config_get_int(cfg, "batch", 8, 1, 1024, &batch, err, sizeof err) != EB_OK ||
        eb_config_get_int(cfg, "max_attempts", 4, 1, 100, &attempts, err, sizeof err) != EB_OK ||
        eb_config_get_int(cfg, "request_timeout_ms", 120000, 100, 86400000, &timeout, err,
                          sizeof err) != EB_OK ||
        eb_config_get_int(cfg, "deadline_ms", 0, 0, 3600000, &deadline, err, sizeof err) !=
            EB_OK) {
        fprintf(stderr, "embroker: %s\n", err);
        return 2;
    }
    const char *fmt = eb_config_get(cfg, "format", NULL);
    eb_backfill_format format = EB_BACKFILL_AUTO;
    if (fmt && strcmp(fmt, "csv") == 0)
        format = EB_BACKFILL_CSV;
    else if (fmt && strcmp(fmt, "jsonl") == 0)
        format = EB_BACKFILL_JSONL;
    else if (fmt) {
        fprintf(stderr, "embroker: --format %s: use csv or jsonl\n", fmt);
        return 2;
    }

    int rc = 1;
    eb_backfill_reader *reader = NULL;
    sql_source q = {0};
    eb_backfill_state *state = NULL;
    char *input_id = NULL, *checkpoint = NULL, *base_dir = NULL;
    eb_backfill_source src = {0};
    if (input) {
        reader = eb_backfill_reader_open(input, format, err, sizeof err);
        if (!reader) {
            fprintf(stderr, "embroker: backfill: %s\n", err);
            return 1;
        }
        if (eb_backfill_count_rows(input, format, &src.total_rows, err, sizeof err) != EB_OK)
            src.total_rows = 0;
        char *copy = strdup(input);
        base_dir = copy ? strdup(dirname(copy)) : NULL;
        free(copy);
        src.ctx = reader;
        src.next = file_source_next;
        src.base_dir = base_dir;
    } else {
        const char *db = eb_config_get(cfg, "db", eb_config_get(cfg, "pg_url", NULL));
        if (!db) {
            fprintf(stderr, "embroker: backfill --sql needs --db URL (or EMBROKER_PG_URL)\n");
            return 2;
        }
        q.pg = PQconnectdb(db);
        if (PQstatus(q.pg) != CONNECTION_OK) {
            fprintf(stderr, "embroker: backfill: cannot connect to the database: %s",
                    PQerrorMessage(q.pg));
            PQfinish(q.pg);
            return 1;
        }
        PQsetNoticeProcessor(q.pg, noop_notice, NULL);
        PQsetClientEncoding(q.pg, "UTF8");
        if (!PQsendQuery(q.pg, sql) || !PQsetSingleRowMode(q.pg)) {
            fprintf(stderr, "embroker: backfill: cannot run the query: %s", PQerrorMessage(q.pg));
            PQfinish(q.pg);
            return 1;
        }
        src.ctx = &q;
        src.next = sql_source_next;
        src.base_dir = NULL; /* image paths relative to the current directory */
    }
    input_id = eb_backfill_state_input_id(input, sql, err, sizeof err);
    if (!input_id) {
        fprintf(stderr, "embroker: backfill: %s\n", err);
        goto out;
    }
    const char *ck = eb_config_get(cfg, "checkpoint", NULL);
    if (ck) {
        checkpoint = strdup(ck);
    } else if (input) {
        if (asprintf(&checkpoint, "%s.checkpoint", input) < 0)
            checkpoint = NULL;
    } else {
        /* "sql <hex>": name the file after the query's hash */
        if (asprintf(&checkpoint, "backfill-%.12s.checkpoint", input_id + 4) < 0)
            checkpoint = NULL;
    }
    state = eb_backfill_state_new(input_id);
    if (!checkpoint || !state) {
        fprintf(stderr, "embroker: backfill: out of memory\n");
        goto out;
    }
    eb_status ls = eb_backfill_state_load(state, checkpoint, err, sizeof err);
    if (ls == EB_OK) {
        fprintf(stderr, "embroker: backfill: resuming from %s (rows before %" PRIu64
                " settled, %zu failed rows to retry)\n",
                checkpoint, eb_backfill_state_watermark(state),
                eb_backfill_state_failed_count(state));
    } else if (ls != EB_ERR_NOT_FOUND) {
        fprintf(stderr, "embroker: backfill: %s\n", err);
        goto out;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    eb_backfill_config bc = {0};
    bc.template_default = eb_config_get(cfg, "template_default", NULL);
    bc.source_type = eb_config_get(cfg, "source_type", NULL);
    bc.in_flight = (unsigned)batch;
    bc.image_model = eb_config_get(cfg, "image_model", eb_config_get(cfg, "model", NULL));
    bc.text_model = eb_config_get(cfg, "text_model", NULL);
    bc.deadline_ms = (uint32_t)deadline;
    bc.request_timeout_ms = (int)timeout;
    bc.max_attempts = (unsigned)attempts;
    bc.state = state;
    bc.checkpoint_path = checkpoint;
    bool quiet = eb_config_get_bool(cfg, "quiet", false);
    bc.progress = quiet ? NULL : stderr;
    bc.progress_tty = isatty(STDERR_FILENO);
    bc.stop = &g_stop;

    eb_backfill_summary sum;
    eb_status st = eb_backfill_run(eb, &src, &bc, &sum, err, sizeof err);
    eb_backfill_summary_json(&sum, stdout);
    fflush(stdout);
    eb_backfill_summary_text(&sum, stderr);
    fprintf(stderr, "embroker: backfill: checkpoint %s (rows before %" PRIu64 " settled)\n",
            checkpoint, sum.watermark);
    if (st == EB_ERR_CANCELLED && sum.interrupted) {
        fprintf(stderr, "embroker: backfill: %s\n", err);
        rc = 130;
    } else if (st != EB_OK) {
        fprintf(stderr, "embroker: backfill stopped: %s: %s\n", eb_status_str(st), err);
        rc = 1;
    } else {
        rc = sum.failed ? 1 : 0;
    }
out:
    eb_backfill_reader_close(&reader);
    if (q.pg)
        PQfinish(q.pg);
    eb_backfill_state_destroy(&state);
    free(input_id);
    free(checkpoint);
    free(base_dir);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    eb_log_set_program("embroker");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "-k") == 0)
            argv[i] = "--k"; /* the one short flag: scan's top-k */
    }
    static const char *const bool_flags[] = {"inline", "no_embedding", "send_hash", "store",
                                             "embedding", "table", "no_client_hash", "bulk",
                                             "quiet", NULL};
    char *pos[MAX_ARGS + 1];
    int n_pos = 0;
    char err[1024];
    eb_config *cfg = eb_config_new();
    if (!cfg || eb_config_load_all(cfg, argc, argv, bool_flags, pos, MAX_ARGS + 1, &n_pos, err,
                                   sizeof err) != EB_OK) {
        fprintf(stderr, "embroker: %s\n", cfg ? err : "out of memory");
        usage(stderr);
        eb_config_destroy(&cfg);
        return 2;
    }
    if (n_pos < 1) {
        usage(stderr);
        eb_config_destroy(&cfg);
        return 2;
    }
    eb_log_level level = EB_LOG_WARN;
    const char *lv = eb_config_get(cfg, "log_level", NULL);
    if (!lv || !eb_log_level_parse(lv, &level))
        level = EB_LOG_WARN;
    eb_log_set_level(level);

    const char *cmd = pos[0];
    bool is_health = strcmp(cmd, "health") == 0;
    bool is_image = strcmp(cmd, "embed-image") == 0;
    bool is_text = strcmp(cmd, "embed-text") == 0;
    bool is_scan = strcmp(cmd, "scan") == 0;
    bool is_delete = strcmp(cmd, "delete") == 0;
    bool is_migrate = strcmp(cmd, "migrate") == 0;
    bool is_backfill = strcmp(cmd, "backfill") == 0;
    if (!is_health && !is_image && !is_text && !is_scan && !is_delete && !is_migrate &&
        !is_backfill) {
        fprintf(stderr, "embroker: unknown command \"%s\"\n", cmd);
        usage(stderr);
        eb_config_destroy(&cfg);
        return 2;
    }
    if ((is_image || is_text) && n_pos < 2) {
        fprintf(stderr, "embroker: %s needs at least one %s\n", cmd, is_image ? "FILE" : "TEXT");
        eb_config_destroy(&cfg);
        return 2;
    }
    if ((is_scan || is_delete || is_migrate || is_backfill || is_health) && n_pos > 1) {
        fprintf(stderr, "embroker: %s takes no positional arguments (got \"%s\"); see --help\n",
                cmd, pos[1]);
        eb_config_destroy(&cfg);
        return 2;
    }
    if (is_migrate) {
        int rc = cmd_migrate(cfg);
        eb_config_destroy(&cfg);
        return rc;
    }

    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.broker = eb_config_get(cfg, "broker", opt.broker);
    opt.run_dir = eb_config_get(cfg, "run_dir", opt.run_dir);
    opt.inline_only = eb_config_get_bool(cfg, "inline", opt.inline_only);
    int64_t v;
    if (eb_config_get_int(cfg, "timeout_ms", opt.timeout_ms, 1, 86400000, &v, err, sizeof err) !=
            EB_OK ||
        (opt.timeout_ms = (int)v,
         eb_config_get_int(cfg, "heartbeat_interval_ms", opt.heartbeat_interval_ms, 10, 600000,
                           &v, err, sizeof err) != EB_OK)) {
        fprintf(stderr, "embroker: %s\n", err);
        eb_config_destroy(&cfg);
        return 2;
    }
    opt.heartbeat_interval_ms = (int)v;
    bool with_embedding = !eb_config_get_bool(cfg, "no_embedding", false);

    embroker_t *eb = NULL;
    eb_status st = embroker_connect(&opt, &eb, err, sizeof err);
    if (st != EB_OK) {
        fprintf(stderr, "embroker: %s\n", err);
        eb_config_destroy(&cfg);
        return 1;
    }
    int rc = 0;
    if (is_health) {
        char *json = NULL;
        st = embroker_health(eb, &json, err, sizeof err);
        if (st != EB_OK) {
            fprintf(stderr, "embroker: %s\n", err);
            rc = 1;
        } else {
            printf("%s\n", json);
        }
        free(json);
    } else if (is_scan) {
        rc = cmd_scan(eb, cfg, opt.timeout_ms);
    } else if (is_delete) {
        rc = cmd_delete(eb, cfg);
    } else if (is_backfill) {
        rc = cmd_backfill(eb, cfg);
    } else {
        const char *model = eb_config_get(cfg, "model", is_image ? "siglip" : "qwen3");
        embroker_request_t *req = NULL;
        const char *const *args = (const char *const *)&pos[1];
        size_t n = (size_t)n_pos - 1;
        bool send_hash = eb_config_get_bool(cfg, "send_hash", false);
        if (is_image && !send_hash)
            st = embroker_embed_image_files(eb, model, args, n, &req);
        else if (is_image) {
            /* the same as embroker_embed_image_files, with the hash option */
            embroker_input_t *in = calloc(n, sizeof *in);
            uint8_t **bufs = calloc(n, sizeof *bufs);
            st = in && bufs ? EB_OK : EB_ERR_NOMEM;
            for (size_t i = 0; st == EB_OK && i < n; i++) {
                size_t len = 0;
                bufs[i] = slurp(args[i], &len, err, sizeof err);
                if (!bufs[i]) {
                    fprintf(stderr, "embroker: %s\n", err);
                    st = EB_ERR_NOT_FOUND;
                }
                in[i] = (embroker_input_t){.kind = EMBROKER_INPUT_IMAGE, .bytes = bufs[i],
                                           .len = len};
            }
            embroker_request_options_t ro = {.send_hash = true};
            if (st == EB_OK)
                st = embroker_embed(eb, model, in, n, &ro, &req);
            for (size_t i = 0; bufs && i < n; i++)
                free(bufs[i]);
            free(bufs);
            free(in);
        } else {
            embroker_request_options_t ro = {.instruction = eb_config_get(cfg, "instruction", NULL),
                                             .send_hash = send_hash};
            int64_t dim = 0;
            if (eb_config_get_int(cfg, "output_dim", 0, 0, 65536, &dim, err, sizeof err) != EB_OK) {
                fprintf(stderr, "embroker: %s\n", err);
                embroker_close(&eb);
                eb_config_destroy(&cfg);
                return 2;
            }
            ro.output_dim = (uint32_t)dim;
            st = embroker_embed_texts(eb, model, args, n, &ro, &req);
        }
        if (!req) {
            fprintf(stderr, "embroker: %s failed: %s (check the files, the model name \"%s\" and "
                    "that the broker runs)\n", cmd, eb_status_str(st), model);
            rc = 1;
        } else {
            print_request(stdout, req, &pos[1], with_embedding);
            if (!request_ok(req)) {
                fprintf(stderr, "embroker: %s: %s %s\n", cmd,
                        eb_status_str(embroker_request_status(req)),
                        embroker_request_error(req));
                rc = 1;
            }
            embroker_request_free(&req);
        }
    }
    embroker_close(&eb);
    eb_config_destroy(&cfg);
    return rc;
}
