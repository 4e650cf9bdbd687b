/* embroker — command-line client: health and embeddings as JSON on stdout.
 *
 *   embroker health
 *   embroker embed-image FILE...      (one request with every file; format from the bytes)
 *   embroker embed-text TEXT...       (one request with every text)
 *
 * Flags (also EMBROKER_* environment and a config file, eb_config.h): --run-dir DIR,
 * --broker ENDPOINT, --model NAME (default siglip for images, qwen3 for texts), --inline (no
 * shared memory), --timeout-ms N, --heartbeat-interval-ms N, --no-embedding (omit the vectors).
 * Exit status: 0 when every input succeeded, 1 when the request or an input failed, 2 for usage
 * errors. Errors go to stderr as one line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_config.h"
#include "eb_hash.h"
#include "eb_log.h"
#include "embroker.h"

enum { MAX_ARGS = 256 };

static void usage(FILE *f)
{
    fprintf(f, "usage: embroker [flags] health\n"
               "       embroker [flags] embed-image FILE...\n"
               "       embroker [flags] embed-text TEXT...\n"
               "flags: --run-dir DIR | --broker ENDPOINT, --model NAME, --inline,\n"
               "       --timeout-ms N, --heartbeat-interval-ms N, --no-embedding,\n"
               "       --output-dim N (truncate and renormalise),\n"
               "       --instruction TASK (texts: embed as \"Instruct: TASK\\nQuery:TEXT\")\n");
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
    print_timing(f, "total", t->total_us, &first);
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

int main(int argc, char **argv)
{
    eb_log_set_program("embroker");
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    static const char *const bool_flags[] = {"inline", "no_embedding", NULL};
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
    if (!is_health && !is_image && !is_text) {
        fprintf(stderr, "embroker: unknown command \"%s\"\n", cmd);
        usage(stderr);
        eb_config_destroy(&cfg);
        return 2;
    }
    if (!is_health && n_pos < 2) {
        fprintf(stderr, "embroker: %s needs at least one %s\n", cmd, is_image ? "FILE" : "TEXT");
        eb_config_destroy(&cfg);
        return 2;
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
    } else {
        const char *model = eb_config_get(cfg, "model", is_image ? "siglip" : "qwen3");
        embroker_request_t *req = NULL;
        const char *const *args = (const char *const *)&pos[1];
        size_t n = (size_t)n_pos - 1;
        if (is_image)
            st = embroker_embed_image_files(eb, model, args, n, &req);
        else {
            embroker_request_options_t ro = {.instruction = eb_config_get(cfg, "instruction", NULL)};
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
