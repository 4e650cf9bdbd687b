/* eb_services — build, report and tear down the broker's cache, search and store services.
 *
 * The services are independent modules (eb_cache, eb_pgpool + eb_search, eb_spool +
 * eb_storepump); what this file adds is their lifecycle as one unit: the order of creation
 * (statements registered before the pool starts, the pump after the spool and search), the
 * order of destruction (the pool first, so that the callbacks it completes with
 * EB_ERR_SHUTDOWN still find a live pump and broker), and one place that turns their state
 * into health fields and a "why is search unavailable" message.
 */
#include "eb_services.h"
#include "eb_status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eb_log.h"
#include "eb_mpack.h"
#include "eb_pgpool.h"
#include "eb_spool.h"

struct eb_services {
    eb_services_options opt;
    eb_loop *loop;
    eb_cache *cache;
    eb_pgpool *pool;
    eb_search *search;
    eb_spool *spool;
    eb_storepump *pump;
    uint32_t image_dims, text_dims; /* what search uses; 0 = unknown */
    char dims_note[768];            /* why dims are unknown, or "" */
    char why[1024];                 /* eb_services_search_unavailable's buffer */
    eb_services_durable_fn durable_fn;
    void *durable_arg;
};

static eb_status get_u32(const eb_config *cfg, const char *key, int64_t fallback, int64_t min,
                         int64_t max, uint32_t *out, char *err, size_t err_len)
{
    int64_t v;
    eb_status st = eb_config_get_int(cfg, key, fallback, min, max, &v, err, err_len);
    if (st == EB_OK)
        *out = (uint32_t)v;
    return st;
}

static void on_durable(void *arg, uint64_t durable_seq)
{
    eb_services *s = arg;
    if (s->durable_fn)
        s->durable_fn(s->durable_arg, durable_seq);
}

/* libpq's connect_timeout for the one blocking read at start: append it unless present. */
static void conninfo_with_timeout(const char *url, char *out, size_t cap)
{
    if (strstr(url, "connect_timeout")) {
        snprintf(out, cap, "%s", url);
    } else if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        snprintf(out, cap, "%s%sconnect_timeout=3", url, strchr(url, '?') ? "&" : "?");
    } else {
        snprintf(out, cap, "%s connect_timeout=3", url);
    }
}

/* Decide the dimensions search uses: the table's, else the configured ones. */
static eb_status resolve_dims(eb_services *s, char *err, size_t err_len)
{
    char conninfo[1100];
    conninfo_with_timeout(s->opt.db_url, conninfo, sizeof conninfo);
    eb_table_dims table;
    char why[512] = "";
    eb_status st = eb_migrate_read_dims(conninfo, &table, why, sizeof why);
    if (st == EB_OK && table.exists) {
        if ((s->opt.image_dims || s->opt.text_dims) &&
            eb_migrate_check_dims(&table, s->opt.image_dims, s->opt.text_dims,
                                  "the configuration (image_dims/text_dims)", err,
                                  err_len) != EB_OK)
            return EB_ERR_INVALID;
        s->image_dims = table.image;
        s->text_dims = table.text;
        return EB_OK;
    }
    if (st == EB_OK)
        snprintf(why, sizeof why, "table \"ProductEmbeddings\" does not exist; run `embroker "
                 "migrate`");
    if (s->opt.image_dims && s->opt.text_dims) {
        s->image_dims = s->opt.image_dims;
        s->text_dims = s->opt.text_dims;
        eb_log_warn("table_dims_unread", "reason=\"%s\" using=\"image_dims=%u text_dims=%u from "
                    "the configuration\"", why, s->image_dims, s->text_dims);
        return EB_OK;
    }
    snprintf(s->dims_note, sizeof s->dims_note, "the table's dimensions are unknown (%s); set "
             "image_dims and text_dims, or start the broker once PostgreSQL is reachable", why);
    eb_log_warn("search_disabled", "reason=\"%s\"", s->dims_note);
    return EB_OK;
}

eb_status eb_services_options_load(const eb_config *cfg, const char *run_dir,
                                   eb_services_options *o, char *err, size_t err_len)
{
    memset(o, 0, sizeof *o);
    snprintf(o->cache_url, sizeof o->cache_url, "%s", eb_config_get(cfg, "cache_url", ""));
    snprintf(o->db_url, sizeof o->db_url, "%s", eb_config_get(cfg, "db_url", ""));
    const char *spool = eb_config_get(cfg, "spool_dir", NULL);
    if (spool && *spool)
        snprintf(o->spool_dir, sizeof o->spool_dir, "%s", spool);
    else
        snprintf(o->spool_dir, sizeof o->spool_dir, "%s/spool", run_dir);
    eb_status st;
    if ((st = get_u32(cfg, "cache_ttl_ms", 7LL * 24 * 3600 * 1000, 1000, UINT32_MAX,
                      &o->cache_ttl_ms, err, err_len)) ||
        (st = get_u32(cfg, "cache_timeout_ms", 50, 1, 60000, &o->cache_timeout_ms, err,
                      err_len)) ||
        (st = get_u32(cfg, "db_connections", 4, 1, 64, &o->db_connections, err, err_len)) ||
        (st = get_u32(cfg, "db_statement_timeout_ms", 2000, 10, 600000,
                      &o->db_statement_timeout_ms, err, err_len)) ||
        (st = get_u32(cfg, "search_ef", 100, 1, 1000, &o->ef_search, err, err_len)) ||
        (st = get_u32(cfg, "search_overfetch", 4, 1, 100, &o->overfetch, err, err_len)) ||
        (st = get_u32(cfg, "image_dims", 0, 0, 16000, &o->image_dims, err, err_len)) ||
        (st = get_u32(cfg, "text_dims", 0, 0, 16000, &o->text_dims, err, err_len)) ||
        (st = get_u32(cfg, "store_retry_ms", 500, 10, 600000, &o->store_retry_ms, err,
                      err_len)))
        return st;
    o->spool_sync = eb_config_get_bool(cfg, "spool_sync", true);
    return EB_OK;
}

static eb_status start_db(eb_services *s, char *err, size_t err_len)
{
    if (resolve_dims(s, err, err_len) != EB_OK)
        return EB_ERR_INVALID;
    if (!s->image_dims)
        return EB_OK; /* search off; health says why */
    eb_pgpool_options po;
    eb_pgpool_options_default(&po);
    po.conninfo = s->opt.db_url;
    po.connections = s->opt.db_connections;
    po.statement_timeout_ms = s->opt.db_statement_timeout_ms;
    s->pool = eb_pgpool_new(s->loop, &po, err, err_len);
    if (!s->pool)
        return EB_ERR_INVALID;
    eb_search_options so;
    eb_search_options_default(&so);
    so.image_dims = s->image_dims;
    so.text_dims = s->text_dims;
    so.ef_search = s->opt.ef_search;
    so.overfetch = s->opt.overfetch;
    s->search = eb_search_new(s->pool, &so, err, err_len);
    if (!s->search)
        return EB_ERR_INVALID;
    if (mkdir(s->opt.spool_dir, 0700) != 0 && errno != EEXIST) {
        eb_set_err(err, err_len, "cannot create spool_dir \"%s\": %s", s->opt.spool_dir,
                   strerror(errno));
        return EB_ERR_IO;
    }
    eb_spool_options spo;
    eb_spool_options_default(&spo);
    spo.sync = s->opt.spool_sync;
    s->spool = eb_spool_open(s->opt.spool_dir, &spo, err, err_len);
    if (!s->spool)
        return EB_ERR_IO;
    eb_storepump_options pu;
    eb_storepump_options_default(&pu);
    pu.retry_ms = s->opt.store_retry_ms;
    pu.durable_fn = on_durable;
    pu.durable_arg = s;
    s->pump = eb_storepump_new(s->loop, s->spool, s->pool, s->search, &pu, err, err_len);
    if (!s->pump)
        return EB_ERR_IO;
    return eb_pgpool_start(s->pool);
}

eb_services *eb_services_new(eb_loop *loop, const eb_services_options *options, char *err,
                             size_t err_len)
{
    eb_services *s = calloc(1, sizeof *s);
    if (!s) {
        eb_set_err(err, err_len, "out of memory");
        return NULL;
    }
    s->opt = *options;
    s->loop = loop;
    if (s->opt.cache_url[0]) {
        eb_cache_options co;
        eb_cache_options_default(&co);
        co.url = s->opt.cache_url;
        co.ttl_ms = s->opt.cache_ttl_ms;
        co.command_timeout_ms = s->opt.cache_timeout_ms;
        char why[256];
        s->cache = eb_cache_new(loop, &co, why, sizeof why);
        if (!s->cache) {
            eb_set_err(err, err_len, "cache_url \"%s\": %s", s->opt.cache_url, why);
            goto fail;
        }
    }
    if (s->opt.db_url[0] && start_db(s, err, err_len) != EB_OK)
        goto fail;
    eb_log_info("services", "cache=%s search=%s image_dims=%u text_dims=%u spool=%s",
                s->cache ? "on" : "off", s->search ? "on" : "off", s->image_dims, s->text_dims,
                s->spool ? s->opt.spool_dir : "-");
    return s;
fail:
    eb_services_destroy(&s);
    return NULL;
}

void eb_services_destroy(eb_services **services)
{
    if (!services || !*services)
        return;
    eb_services *s = *services;
    eb_pgpool_destroy(&s->pool);
    eb_storepump_destroy(&s->pump);
    eb_spool_close(&s->spool);
    eb_search_destroy(&s->search);
    eb_cache_destroy(&s->cache);
    free(s);
    *services = NULL;
}

eb_cache *eb_services_cache(eb_services *s)
{
    return s ? s->cache : NULL;
}

eb_search *eb_services_search(eb_services *s)
{
    return s ? s->search : NULL;
}

eb_storepump *eb_services_pump(eb_services *s)
{
    return s ? s->pump : NULL;
}

bool eb_services_db_up(const eb_services *s)
{
    return s && s->pool && eb_pgpool_is_up(s->pool);
}

const char *eb_services_search_unavailable(eb_services *s)
{
    if (!s || !s->opt.db_url[0])
        return "search is not configured on this broker (set db_url)";
    if (!s->search)
        return s->dims_note;
    if (eb_pgpool_is_up(s->pool))
        return NULL;
    eb_pgpool_stats st;
    eb_pgpool_get_stats(s->pool, &st);
    snprintf(s->why, sizeof s->why, "PostgreSQL at %s is unavailable: %s",
             eb_pgpool_server(s->pool), st.last_error[0] ? st.last_error : "not connected yet");
    return s->why;
}

void eb_services_dims(const eb_services *s, uint32_t *image_dims, uint32_t *text_dims)
{
    *image_dims = s ? s->image_dims : 0;
    *text_dims = s ? s->text_dims : 0;
}

void eb_services_set_durable_fn(eb_services *s, eb_services_durable_fn fn, void *arg)
{
    if (!s)
        return;
    s->durable_fn = fn;
    s->durable_arg = arg;
}

void eb_services_pack_health(eb_services *s, msgpack_packer *pk)
{
    eb_mpack_str(pk, "redis");
    if (!s || !s->cache) {
        msgpack_pack_map(pk, 3);
        eb_mpack_kv_bool(pk, "configured", false);
        eb_mpack_kv_bool(pk, "ok", false);
        eb_mpack_kv_str(pk, "error", "not configured (set cache_url)");
    } else {
        eb_cache_stats cs;
        eb_cache_get_stats(s->cache, &cs);
        msgpack_pack_map(pk, 11);
        eb_mpack_kv_bool(pk, "configured", true);
        eb_mpack_kv_bool(pk, "ok", cs.up);
        eb_mpack_kv_str(pk, "error",
                        cs.up ? "" : (cs.last_error[0] ? cs.last_error : "connecting"));
        eb_mpack_kv_u64(pk, "hits", cs.hits);
        eb_mpack_kv_u64(pk, "misses", cs.misses);
        eb_mpack_kv_u64(pk, "errors", cs.errors);
        eb_mpack_kv_u64(pk, "timeouts", cs.timeouts);
        eb_mpack_kv_u64(pk, "unavailable", cs.unavailable);
        eb_mpack_kv_u64(pk, "puts_done", cs.puts_done);
        eb_mpack_kv_u64(pk, "puts_failed", cs.puts_failed);
        eb_mpack_kv_u64(pk, "corrupt", cs.corrupt);
    }
    eb_mpack_str(pk, "postgres");
    if (!s || !s->opt.db_url[0]) {
        msgpack_pack_map(pk, 4);
        eb_mpack_kv_bool(pk, "configured", false);
        eb_mpack_kv_bool(pk, "ok", false);
        eb_mpack_kv_str(pk, "error", "not configured (set db_url)");
        eb_mpack_kv_u64(pk, "spool_pending", 0);
        return;
    }
    const char *why = eb_services_search_unavailable(s);
    eb_spool_stats sp = {0};
    eb_storepump_stats ps = {0};
    eb_pgpool_stats pg = {0};
    if (s->spool)
        eb_spool_get_stats(s->spool, &sp);
    if (s->pump)
        eb_storepump_get_stats(s->pump, &ps);
    if (s->pool)
        eb_pgpool_get_stats(s->pool, &pg);
    msgpack_pack_map(pk, 16);
    eb_mpack_kv_bool(pk, "configured", true);
    eb_mpack_kv_bool(pk, "ok", why == NULL);
    eb_mpack_kv_str(pk, "error", why ? why : "");
    eb_mpack_kv_u64(pk, "spool_pending", sp.pending);
    eb_mpack_kv_u64(pk, "spool_pending_bytes", sp.pending_bytes);
    eb_mpack_kv_u64(pk, "spool_durable_seq", sp.durable_seq);
    eb_mpack_kv_u64(pk, "spool_acked_seq", sp.acked_seq);
    eb_mpack_kv_u64(pk, "spool_replayed", sp.replayed);
    eb_mpack_kv_u64(pk, "stored", ps.stored);
    eb_mpack_kv_u64(pk, "duplicates", ps.duplicates);
    eb_mpack_kv_u64(pk, "rejected", ps.rejected);
    eb_mpack_kv_bool(pk, "backlog", ps.backlog);
    eb_mpack_kv_u64(pk, "connected", pg.connected);
    eb_mpack_kv_u64(pk, "queries_failed", pg.failed);
    eb_mpack_kv_u64(pk, "image_dims", s->image_dims);
    eb_mpack_kv_u64(pk, "text_dims", s->text_dims);
}
