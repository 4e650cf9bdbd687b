/* eb_migrate — numbered SQL migrations, applied once each, recorded in schema_migrations.
 *
 * The schema lives in plain SQL files so a DBA can read and replay them by hand; this module
 * only picks the files (by number, with the halfvec variant chosen by dimension), fills the
 * dimension placeholders, and runs each one in a transaction with its bookkeeping row, under an
 * advisory lock. Blocking libpq is fine here: migrations run before the broker's loop starts.
 */
#include "eb_migrate.h"
#include "eb_status.h"

#include <dirent.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "eb_hash.h"
#include "eb_log.h"
#include "eb_pgvector.h"

#define MIGRATE_LOCK_KEY "7306916368154044773" /* arbitrary constant for pg_advisory_lock */

typedef struct migration {
    unsigned version;
    char name[256];
    char path[PATH_MAX];
} migration;

/* First line of a libpq message without its newline. */
static void first_line(const char *msg, char *out, size_t cap)
{
    size_t n = msg ? strcspn(msg, "\n") : 0;
    snprintf(out, cap, "%.*s", (int)n, msg ? msg : "");
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (n < 4096)
            break;
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

static bool is_halfvec_variant(const char *name)
{
    size_t n = strlen(name);
    return n > 12 && strcmp(name + n - 12, "_halfvec.sql") == 0;
}

static int cmp_migration(const void *a, const void *b)
{
    const migration *x = a, *y = b;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* List NNN_*.sql in dir, keeping per number the variant that fits `combined`. */
static eb_status list_migrations(const char *dir, uint32_t combined, migration **out,
                                 size_t *count, char *err, size_t err_len)
{
    DIR *d = opendir(dir);
    if (!d) {
        eb_set_err(err, err_len, "cannot open the migrations directory \"%s\"; set EMBROKER_SQL_DIR",
                   dir);
        return EB_ERR_NOT_FOUND;
    }
    migration *all = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        size_t len = strlen(nm);
        if (len < 9 || len >= sizeof all->name || nm[3] != '_' ||
            strcmp(nm + len - 4, ".sql") != 0 || nm[0] < '0' || nm[0] > '9' || nm[1] < '0' ||
            nm[1] > '9' || nm[2] < '0' || nm[2] > '9')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            migration *m = realloc(all, cap * sizeof *m);
            if (!m) {
                free(all);
                closedir(d);
                return EB_ERR_NOMEM;
            }
            all = m;
        }
        all[n].version = (unsigned)((nm[0] - '0') * 100 + (nm[1] - '0') * 10 + (nm[2] - '0'));
        snprintf(all[n].name, sizeof all[n].name, "%s", nm);
        snprintf(all[n].path, sizeof all[n].path, "%s/%s", dir, nm);
        n++;
    }
    closedir(d);
    if (n == 0) {
        free(all);
        eb_set_err(err, err_len, "no migrations (NNN_name.sql) in \"%s\"", dir);
        return EB_ERR_NOT_FOUND;
    }
    qsort(all, n, sizeof *all, cmp_migration);
    /* Per version: keep the halfvec variant above the HNSW limit, the other at or below. */
    bool want_halfvec = combined > EB_PGVECTOR_HNSW_MAX_DIM;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && all[j].version == all[i].version)
            j++;
        if (j - i > 2) {
            eb_set_err(err, err_len, "migration number %03u has %zu files; at most one plus a "
                                  "*_halfvec.sql variant",
                       all[i].version, j - i);
            free(all);
            return EB_ERR_INVALID;
        }
        size_t pick = SIZE_MAX;
        for (size_t m = i; m < j; m++) {
            bool hv = is_halfvec_variant(all[m].name);
            if (j - i == 1 || hv == want_halfvec)
                pick = m;
        }
        if (pick != SIZE_MAX)
            all[k++] = all[pick];
        i = j;
    }
    *out = all;
    *count = k;
    return EB_OK;
}

static PGresult *exec_ok(PGconn *pg, const char *sql, char *err, size_t err_len,
                         const char *what)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char line[300];
        first_line(PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : PQerrorMessage(pg),
                   line, sizeof line);
        eb_set_err(err, err_len, "%s failed: %s", what, line);
        PQclear(r);
        return NULL;
    }
    return r;
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "extension already exists, skipping" and the like */
}

static PGconn *connect_blocking(const char *conninfo, char *err, size_t err_len)
{
    const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"10", "embroker-migrate", conninfo, NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        char line[300];
        first_line(pg ? PQerrorMessage(pg) : "out of memory", line, sizeof line);
        eb_set_err(err, err_len, "cannot connect to PostgreSQL: %s", line);
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, quiet_notice, NULL);
    return pg;
}

static eb_status query_dims(PGconn *pg, eb_table_dims *dims, char *err, size_t err_len)
{
    memset(dims, 0, sizeof *dims);
    PGresult *r = exec_ok(pg,
                          "SELECT a.attname, a.atttypmod FROM pg_attribute a "
                          "WHERE a.attrelid = to_regclass('\"ProductEmbeddings\"') "
                          "AND a.attnum > 0 AND NOT a.attisdropped AND a.attname IN "
                          "('ImageEmbedding', 'TextEmbedding', 'CombinedEmbedding')",
                          err, err_len, "reading the dimensions of \"ProductEmbeddings\"");
    if (!r)
        return EB_ERR_IO;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *name = PQgetvalue(r, i, 0);
        long mod = strtol(PQgetvalue(r, i, 1), NULL, 10);
        uint32_t v = mod > 0 ? (uint32_t)mod : 0;
        dims->exists = true;
        if (strcmp(name, "ImageEmbedding") == 0)
            dims->image = v;
        else if (strcmp(name, "TextEmbedding") == 0)
            dims->text = v;
        else
            dims->combined = v;
    }
    PQclear(r);
    if (!dims->exists)
        return EB_OK;
    r = exec_ok(pg,
                "SELECT count(*) FROM pg_indexes WHERE tablename = 'ProductEmbeddings' "
                "AND indexdef ILIKE '%USING hnsw%halfvec%'",
                err, err_len, "reading the indexes of \"ProductEmbeddings\"");
    if (!r)
        return EB_ERR_IO;
    dims->halfvec_index = strtol(PQgetvalue(r, 0, 0), NULL, 10) > 0;
    PQclear(r);
    return EB_OK;
}

/* ---- public ----------------------------------------------------------------------------- */

char *eb_migrate_fill(const char *sql, uint32_t image_dim, uint32_t text_dim, char *err,
                      size_t err_len)
{
    static const char *const names[] = {"IMAGE_DIM", "TEXT_DIM", "COMBINED_DIM"};
    char values[3][16];
    snprintf(values[0], sizeof values[0], "%u", image_dim);
    snprintf(values[1], sizeof values[1], "%u", text_dim);
    snprintf(values[2], sizeof values[2], "%u", image_dim + text_dim);
    size_t cap = strlen(sql) + 1, len = 0;
    char *out = malloc(cap);
    if (!out) {
        eb_set_err(err, err_len, "out of memory");
        return NULL;
    }
    const char *p = sql;
    while (*p) {
        if (p[0] == '{' && p[1] == '{') {
            const char *end = strstr(p + 2, "}}");
            size_t nl = end ? (size_t)(end - (p + 2)) : 0;
            int which = -1;
            for (int i = 0; end && i < 3; i++)
                if (strlen(names[i]) == nl && strncmp(p + 2, names[i], nl) == 0)
                    which = i;
            if (which < 0) {
                eb_set_err(err, err_len, "unknown placeholder \"%.*s\" in migration",
                           end ? (int)nl + 4 : 2, p);
                free(out);
                return NULL;
            }
            size_t vl = strlen(values[which]);
            if (len + vl + 1 > cap) { /* values are shorter than placeholders; be safe anyway */
                cap = len + vl + strlen(end + 2) + 1;
                char *o = realloc(out, cap);
                if (!o) {
                    free(out);
                    eb_set_err(err, err_len, "out of memory");
                    return NULL;
                }
                out = o;
            }
            memcpy(out + len, values[which], vl);
            len += vl;
            p = end + 2;
            continue;
        }
        if (len + 2 > cap) {
            cap *= 2;
            char *o = realloc(out, cap);
            if (!o) {
                free(out);
                eb_set_err(err, err_len, "out of memory");
                return NULL;
            }
            out = o;
        }
        out[len++] = *p++;
    }
    out[len] = 0;
    return out;
}

const char *eb_migrate_sql_dir(void)
{
    static char dir[PATH_MAX];
    const char *env = getenv("EMBROKER_SQL_DIR");
    if (env && *env) {
        snprintf(dir, sizeof dir, "%s", env);
        return dir;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        const char *rel[] = {"../../sql", "../share/embroker/sql", "../../../sql"};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
            char cand[PATH_MAX + 64];
            snprintf(cand, sizeof cand, "%s/%s/001_product_embeddings.sql", exe, rel[i]);
            if (access(cand, R_OK) == 0) {
                snprintf(dir, sizeof dir, "%.*s/%s", (int)(sizeof dir / 2), exe, rel[i]);
                return dir;
            }
        }
    }
    snprintf(dir, sizeof dir, "sql");
    return dir;
}

eb_status eb_migrate_check_dims(const eb_table_dims *t, uint32_t image_dim, uint32_t text_dim,
                                const char *who, char *err, size_t err_len)
{
    if (!t || !t->exists)
        return EB_OK;
    if (t->image == image_dim && t->text == text_dim &&
        t->combined == image_dim + text_dim)
        return EB_OK;
    eb_set_err(err, err_len,
               "dimension mismatch: table \"ProductEmbeddings\" has image %u + text %u = combined "
               "%u, but %s gives image %u + text %u; use models with the table's dimensions, or "
               "point the broker at a new database and run `embroker migrate` (vector columns "
               "cannot change length in place)",
               t->image, t->text, t->combined, who ? who : "the configuration", image_dim,
               text_dim);
    return EB_ERR_INVALID;
}

eb_status eb_migrate_read_dims(const char *conninfo, eb_table_dims *dims, char *err,
                               size_t err_len)
{
    if (!conninfo || !dims)
        return EB_ERR_INVALID;
    PGconn *pg = connect_blocking(conninfo, err, err_len);
    if (!pg)
        return EB_ERR_UNAVAILABLE;
    eb_status st = query_dims(pg, dims, err, err_len);
    PQfinish(pg);
    return st;
}

eb_status eb_migrate_run(const char *conninfo, uint32_t image_dim, uint32_t text_dim, char *err,
                         size_t err_len)
{
    return eb_migrate_run_dir(conninfo, eb_migrate_sql_dir(), image_dim, text_dim, NULL, err,
                              err_len);
}

eb_status eb_migrate_run_dir(const char *conninfo, const char *sql_dir, uint32_t image_dim,
                             uint32_t text_dim, unsigned *applied, char *err, size_t err_len)
{
    if (applied)
        *applied = 0;
    if (!conninfo || !sql_dir) {
        eb_set_err(err, err_len, "migrate: missing connection string or sql directory");
        return EB_ERR_INVALID;
    }
    uint32_t combined = image_dim + text_dim;
    if (image_dim == 0 || text_dim == 0 || image_dim > EB_PGVECTOR_MAX_DIM ||
        text_dim > EB_PGVECTOR_MAX_DIM || combined > EB_PGHALFVEC_HNSW_MAX_DIM) {
        eb_set_err(err, err_len,
                   "cannot migrate for image %u + text %u dims: each must be 1..%u and the sum at "
                   "most %u (pgvector's HNSW limit for halfvec)",
                   image_dim, text_dim, EB_PGVECTOR_MAX_DIM, EB_PGHALFVEC_HNSW_MAX_DIM);
        return EB_ERR_INVALID;
    }
    migration *migs = NULL;
    size_t n_migs = 0;
    eb_status st = list_migrations(sql_dir, combined, &migs, &n_migs, err, err_len);
    if (st != EB_OK)
        return st;
    PGconn *pg = connect_blocking(conninfo, err, err_len);
    if (!pg) {
        free(migs);
        return EB_ERR_UNAVAILABLE;
    }
    PGresult *r = NULL;
    char *text = NULL;
    st = EB_ERR_IO;
    if (!(r = exec_ok(pg, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", err, err_len,
                      "taking the migration lock")))
        goto out;
    PQclear(r);
    if (!(r = exec_ok(pg,
                      "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version integer PRIMARY KEY,"
                      " name text NOT NULL,"
                      " checksum text NOT NULL,"
                      " image_dim integer NOT NULL,"
                      " text_dim integer NOT NULL,"
                      " applied_at timestamptz NOT NULL DEFAULT now())",
                      err, err_len, "creating schema_migrations")))
        goto out;
    PQclear(r);

    eb_table_dims dims;
    if (query_dims(pg, &dims, err, err_len) != EB_OK)
        goto out;
    if (eb_migrate_check_dims(&dims, image_dim, text_dim, "the configuration", err, err_len) !=
        EB_OK) {
        st = EB_ERR_INVALID;
        goto out;
    }

    for (size_t i = 0; i < n_migs; i++) {
        migration *m = &migs[i];
        char version[16];
        snprintf(version, sizeof version, "%u", m->version);
        const char *params[1] = {version};
        r = PQexecParams(pg, "SELECT name, checksum FROM schema_migrations WHERE version = $1",
                         1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            char line[300];
            first_line(PQresultErrorMessage(r), line, sizeof line);
            eb_set_err(err, err_len, "reading schema_migrations failed: %s", line);
            goto out;
        }
        bool done = PQntuples(r) > 0;
        char old_sum[80] = "";
        if (done)
            snprintf(old_sum, sizeof old_sum, "%s", PQgetvalue(r, 0, 1));
        PQclear(r);
        r = NULL;

        char *raw = read_text(m->path);
        if (!raw) {
            eb_set_err(err, err_len, "cannot read migration \"%s\"", m->path);
            goto out;
        }
        text = eb_migrate_fill(raw, image_dim, text_dim, err, err_len);
        free(raw);
        if (!text) {
            st = EB_ERR_INVALID;
            goto out;
        }
        uint8_t sum[EB_HASH_LEN];
        char sum_hex[2 * EB_HASH_LEN + 1];
        eb_sha256(text, strlen(text), sum);
        eb_hex(sum, EB_HASH_LEN, sum_hex);
        if (done) {
            if (strcmp(old_sum, sum_hex) != 0)
                eb_log_warn("migration_changed", "version=%u file=%s note=\"applied earlier "
                                                 "with different text; not reapplied\"",
                            m->version, m->name);
            free(text);
            text = NULL;
            continue;
        }
        if (!(r = exec_ok(pg, "BEGIN", err, err_len, "BEGIN")))
            goto out;
        PQclear(r);
        r = PQexec(pg, text);
        ExecStatusType est = PQresultStatus(r);
        if (est != PGRES_COMMAND_OK && est != PGRES_TUPLES_OK) {
            char line[300];
            first_line(PQresultErrorMessage(r), line, sizeof line);
            eb_set_err(err, err_len, "migration %s failed (rolled back): %s", m->name, line);
            PQclear(r);
            r = PQexec(pg, "ROLLBACK");
            PQclear(r);
            r = NULL;
            goto out;
        }
        PQclear(r);
        char idim[16], tdim[16];
        snprintf(idim, sizeof idim, "%u", image_dim);
        snprintf(tdim, sizeof tdim, "%u", text_dim);
        const char *ins[5] = {version, m->name, sum_hex, idim, tdim};
        r = PQexecParams(pg,
                         "INSERT INTO schema_migrations (version, name, checksum, image_dim, "
                         "text_dim) VALUES ($1, $2, $3, $4, $5)",
                         5, NULL, ins, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char line[300];
            first_line(PQresultErrorMessage(r), line, sizeof line);
            eb_set_err(err, err_len, "recording migration %s failed: %s", m->name, line);
            PQclear(r);
            r = PQexec(pg, "ROLLBACK");
            PQclear(r);
            r = NULL;
            goto out;
        }
        PQclear(r);
        if (!(r = exec_ok(pg, "COMMIT", err, err_len, "COMMIT")))
            goto out;
        PQclear(r);
        r = NULL;
        free(text);
        text = NULL;
        if (applied)
            (*applied)++;
        eb_log_info("migration_applied", "version=%u file=%s image_dim=%u text_dim=%u",
                    m->version, m->name, image_dim, text_dim);
    }
    st = EB_OK;
out:
    free(text);
    if (PQstatus(pg) == CONNECTION_OK) {
        PGresult *u = PQexec(pg, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")");
        PQclear(u);
    }
    PQfinish(pg);
    free(migs);
    return st;
}
