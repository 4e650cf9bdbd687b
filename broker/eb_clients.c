/* eb_clients — who is connected on the frontend, which segments they own, who went quiet.
 *
 * Identity map for lookups, a list ordered by last activity for reaping, a name map so one
 * segment cannot be registered by two clients. Ownership proof is the nonce protocol of
 * docs/protocol.md: a ZMQ peer on ipc:// gives no credentials, but only a process that can
 * write into the segment can put our random nonce in its header.
 */
#include "eb_clients.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "eb_log.h"

static void live_unlink(eb_clients *c, eb_client *cl)
{
    if (cl->live_prev)
        cl->live_prev->live_next = cl->live_next;
    else if (c->live_head == cl)
        c->live_head = cl->live_next;
    if (cl->live_next)
        cl->live_next->live_prev = cl->live_prev;
    else if (c->live_tail == cl)
        c->live_tail = cl->live_prev;
    cl->live_prev = cl->live_next = NULL;
}

static void live_append(eb_clients *c, eb_client *cl)
{
    cl->live_next = NULL;
    cl->live_prev = c->live_tail;
    if (c->live_tail)
        c->live_tail->live_next = cl;
    else
        c->live_head = cl;
    c->live_tail = cl;
}

static void segment_drop(eb_clients *c, eb_client *cl, uint32_t i)
{
    eb_segment *s = cl->segments[i];
    if (eb_idmap_get(c->segment_by_name, s->name, strlen(s->name)) == s)
        eb_idmap_remove(c->segment_by_name, s->name, strlen(s->name));
    eb_shm_reader_destroy(&s->reader);
    free(s);
    cl->segments[i] = cl->segments[--cl->n_segments];
    cl->segments[cl->n_segments] = NULL;
    c->n_segments--;
}

static eb_status fill_random(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0)
            return EB_ERR_IO;
        p += n;
        len -= (size_t)n;
    }
    return EB_OK;
}

eb_status eb_clients_init(eb_clients *c)
{
    memset(c, 0, sizeof *c);
    c->by_key = eb_idmap_new();
    c->segment_by_name = eb_idmap_new();
    c->next_segment_id = 1;
    return c->by_key && c->segment_by_name ? EB_OK : EB_ERR_NOMEM;
}

void eb_clients_fini(eb_clients *c)
{
    while (c->live_head)
        eb_clients_remove(c, c->live_head);
    eb_idmap_destroy(&c->by_key);
    eb_idmap_destroy(&c->segment_by_name);
}

eb_client *eb_clients_find(const eb_clients *c, const void *key, size_t key_len)
{
    return eb_idmap_get(c->by_key, key, key_len);
}

eb_client *eb_clients_touch(eb_clients *c, const void *key, size_t key_len, void *socket,
                            bool ipc, int64_t now_us)
{
    eb_client *cl = eb_idmap_get(c->by_key, key, key_len);
    if (!cl) {
        if (key_len == 0 || key_len > EB_IDMAP_KEY_MAX)
            return NULL;
        cl = calloc(1, sizeof *cl);
        if (!cl)
            return NULL;
        memcpy(cl->key, key, key_len);
        cl->key_len = key_len;
        cl->socket = socket;
        cl->ipc = ipc;
        cl->first_seen_us = now_us;
        if (eb_idmap_put(c->by_key, key, key_len, cl) != EB_OK) {
            free(cl);
            return NULL;
        }
        live_append(c, cl);
        c->count++;
    } else if (c->live_tail != cl) {
        live_unlink(c, cl);
        live_append(c, cl);
    }
    cl->last_seen_us = now_us;
    cl->n_received++;
    return cl;
}

eb_client *eb_clients_oldest(const eb_clients *c)
{
    return c->live_head;
}

void eb_clients_remove(eb_clients *c, eb_client *cl)
{
    while (cl->n_segments > 0)
        segment_drop(c, cl, cl->n_segments - 1);
    eb_idmap_remove(c->by_key, cl->key, cl->key_len);
    live_unlink(c, cl);
    c->count--;
    free(cl);
}

eb_status eb_clients_register(eb_clients *c, eb_client *cl, const char *name, uint64_t size,
                              uint8_t nonce_out[EB_PROTO_NONCE_BYTES], char *err,
                              size_t err_len)
{
    if (!cl->ipc) {
        snprintf(err, err_len,
                 "segment \"%s\": shared-memory registration is accepted over ipc:// only; "
                 "this client is connected over tcp://, send inputs inline",
                 name);
        return EB_ERR_DENIED;
    }
    size_t name_len = strlen(name);
    /* Same client registering the name again (e.g. after a lost reply): start over. */
    for (uint32_t i = 0; i < cl->n_segments; i++)
        if (strcmp(cl->segments[i]->name, name) == 0) {
            segment_drop(c, cl, i);
            break;
        }
    /* Only proven registrations are in the name map: a client that merely names someone
     * else's segment (and never proves it) can neither block the owner nor get the segment
     * unlinked when it goes away. */
    if (eb_idmap_get(c->segment_by_name, name, name_len)) {
        snprintf(err, err_len,
                 "segment \"%s\" is registered by another client; a client may only register "
                 "a segment it created",
                 name);
        return EB_ERR_DENIED;
    }
    if (cl->n_segments >= EB_CLIENT_MAX_SEGMENTS) {
        snprintf(err, err_len, "client already has %d segments registered (the maximum)",
                 EB_CLIENT_MAX_SEGMENTS);
        return EB_ERR_TOO_LARGE;
    }
    eb_shm_reader *reader = NULL;
    eb_status st = eb_shm_reader_attach(name, &reader, err, err_len);
    if (st != EB_OK)
        return st;
    if (eb_shm_reader_owner_uid(reader) != geteuid()) {
        snprintf(err, err_len, "segment \"%s\" belongs to uid %u, not to the broker's uid %u",
                 name, (unsigned)eb_shm_reader_owner_uid(reader), (unsigned)geteuid());
        eb_shm_reader_destroy(&reader);
        return EB_ERR_DENIED;
    }
    if (eb_shm_reader_size(reader) != size) {
        snprintf(err, err_len, "segment \"%s\": REGISTER says %llu bytes but the object has %llu",
                 name, (unsigned long long)size,
                 (unsigned long long)eb_shm_reader_size(reader));
        eb_shm_reader_destroy(&reader);
        return EB_ERR_INVALID;
    }
    eb_segment *s = calloc(1, sizeof *s);
    if (!s) {
        eb_shm_reader_destroy(&reader);
        return EB_ERR_NOMEM;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    s->reader = reader;
    s->size = eb_shm_reader_size(reader);
    s->epoch = eb_shm_reader_epoch(reader);
    if (fill_random(s->nonce, sizeof s->nonce) != EB_OK) {
        snprintf(err, err_len, "cannot draw a nonce or record segment \"%s\"", name);
        eb_shm_reader_destroy(&s->reader);
        free(s);
        return EB_ERR_IO;
    }
    cl->segments[cl->n_segments++] = s;
    c->n_segments++;
    memcpy(nonce_out, s->nonce, EB_PROTO_NONCE_BYTES);
    return EB_OK;
}

eb_status eb_clients_prove(eb_clients *c, eb_client *cl, const char *name, eb_segment **out,
                           char *err, size_t err_len)
{
    *out = NULL;
    for (uint32_t i = 0; i < cl->n_segments; i++) {
        eb_segment *s = cl->segments[i];
        if (strcmp(s->name, name) != 0)
            continue;
        if (s->proven) {
            *out = s;
            return EB_OK;
        }
        if (!eb_shm_reader_verify_nonce(s->reader, s->nonce, sizeof s->nonce)) {
            snprintf(err, err_len,
                     "segment \"%s\": the nonce in its header does not match the challenge; "
                     "only the segment's creator can register it",
                     name);
            segment_drop(c, cl, i);
            return EB_ERR_DENIED;
        }
        if (eb_idmap_get(c->segment_by_name, s->name, strlen(s->name))) {
            snprintf(err, err_len, "segment \"%s\" was registered by another client meanwhile",
                     name);
            segment_drop(c, cl, i);
            return EB_ERR_DENIED;
        }
        if (eb_idmap_put(c->segment_by_name, s->name, strlen(s->name), s) != EB_OK) {
            snprintf(err, err_len, "out of memory recording segment \"%s\"", name);
            segment_drop(c, cl, i);
            return EB_ERR_NOMEM;
        }
        s->proven = true;
        s->id = c->next_segment_id++;
        if (c->next_segment_id == 0)
            c->next_segment_id = 1;
        *out = s;
        return EB_OK;
    }
    snprintf(err, err_len, "segment \"%s\": no registration pending for it; send REGISTER first",
             name);
    return EB_ERR_NOT_FOUND;
}

eb_segment *eb_clients_segment(const eb_client *cl, uint32_t id)
{
    for (uint32_t i = 0; i < cl->n_segments; i++)
        if (cl->segments[i]->proven && cl->segments[i]->id == id)
            return cl->segments[i];
    return NULL;
}
