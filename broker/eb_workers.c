/* eb_workers — connected workers, the models they serve, and the LRU choice among them.
 *
 * Three intrusive structures make every hot-path question O(1) (for a worker serving a small
 * number of models): an identity map, one live list ordered by the time of each worker's last
 * message (the head is the first to miss heartbeats), and per model a ready list of the
 * workers with credit ordered by last use (the head is the least recently used). A worker that
 * serves k models is linked into k ready lists through worker->links[i].
 */
#include "eb_workers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_log.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static int link_index(const eb_broker_worker *worker, const eb_broker_model *model)
{
    for (uint32_t i = 0; i < worker->n_models; i++)
        if (worker->models[i] == model)
            return (int)i;
    return -1;
}

static eb_broker_worker_link *link_of(eb_broker_worker *worker, const eb_broker_model *model)
{
    int i = link_index(worker, model);
    return i < 0 ? NULL : &worker->links[i];
}

static void ready_unlink(eb_broker_model *model, eb_broker_worker *worker)
{
    eb_broker_worker_link *l = link_of(worker, model);
    if (!l || !l->linked)
        return;
    if (l->prev)
        link_of(l->prev, model)->next = l->next;
    else
        model->ready_head = l->next;
    if (l->next)
        link_of(l->next, model)->prev = l->prev;
    else
        model->ready_tail = l->prev;
    l->prev = l->next = NULL;
    l->linked = false;
}

static void ready_append(eb_broker_model *model, eb_broker_worker *worker)
{
    eb_broker_worker_link *l = link_of(worker, model);
    if (!l || l->linked)
        return;
    l->next = NULL;
    l->prev = model->ready_tail;
    if (model->ready_tail)
        link_of(model->ready_tail, model)->next = worker;
    else
        model->ready_head = worker;
    model->ready_tail = worker;
    l->linked = true;
}

static void ready_prepend(eb_broker_model *model, eb_broker_worker *worker)
{
    eb_broker_worker_link *l = link_of(worker, model);
    if (!l || l->linked)
        return;
    l->prev = NULL;
    l->next = model->ready_head;
    if (model->ready_head)
        link_of(model->ready_head, model)->prev = worker;
    else
        model->ready_tail = worker;
    model->ready_head = worker;
    l->linked = true;
}

static void live_unlink(eb_workers *w, eb_broker_worker *worker)
{
    if (worker->live_prev)
        worker->live_prev->live_next = worker->live_next;
    else if (w->live_head == worker)
        w->live_head = worker->live_next;
    if (worker->live_next)
        worker->live_next->live_prev = worker->live_prev;
    else if (w->live_tail == worker)
        w->live_tail = worker->live_prev;
    worker->live_prev = worker->live_next = NULL;
}

static void live_append(eb_workers *w, eb_broker_worker *worker)
{
    worker->live_next = NULL;
    worker->live_prev = w->live_tail;
    if (w->live_tail)
        w->live_tail->live_next = worker;
    else
        w->live_head = worker;
    w->live_tail = worker;
}

static void worker_free(eb_broker_worker *worker)
{
    eb_proto_msg_free(&worker->ready);
    free(worker->models);
    free(worker->links);
    free(worker);
}

/* ---- public ------------------------------------------------------------------------------- */

eb_status eb_workers_init(eb_workers *w, size_t max_models)
{
    memset(w, 0, sizeof *w);
    w->by_key = eb_idmap_new();
    w->max_models = max_models ? max_models : 256;
    return w->by_key ? EB_OK : EB_ERR_NOMEM;
}

void eb_workers_fini(eb_workers *w)
{
    while (w->live_head) {
        eb_broker_worker *worker = w->live_head;
        eb_workers_remove(w, worker);
    }
    for (size_t i = 0; i < w->n_models; i++)
        free(w->models[i]);
    free(w->models);
    eb_idmap_destroy(&w->by_key);
    memset(w, 0, sizeof *w);
}

eb_broker_model *eb_workers_model(const eb_workers *w, const char *name)
{
    for (size_t i = 0; i < w->n_models; i++)
        if (strcmp(w->models[i]->name, name) == 0)
            return w->models[i];
    return NULL;
}

eb_broker_model *eb_workers_model_get_or_add(eb_workers *w, const char *name)
{
    eb_broker_model *m = eb_workers_model(w, name);
    if (m)
        return m;
    if (w->n_models >= w->max_models || strlen(name) > EB_PROTO_MODEL_NAME_MAX)
        return NULL;
    if (w->n_models == w->cap_models) {
        size_t cap = w->cap_models ? w->cap_models * 2 : 8;
        eb_broker_model **models = realloc(w->models, cap * sizeof *models);
        if (!models)
            return NULL;
        w->models = models;
        w->cap_models = cap;
    }
    m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    snprintf(m->name, sizeof m->name, "%s", name);
    eb_queue_init(&m->queue[0]);
    eb_queue_init(&m->queue[1]);
    w->models[w->n_models++] = m;
    return m;
}

eb_broker_worker *eb_workers_find(const eb_workers *w, const void *key, size_t key_len)
{
    return eb_idmap_get(w->by_key, key, key_len);
}

eb_status eb_workers_add(eb_workers *w, const void *key, size_t key_len, void *socket,
                         eb_proto_msg *ready, uint32_t max_batch_cap, int64_t now_us,
                         eb_broker_worker **out, char *err, size_t err_len)
{
    *out = NULL;
    const eb_proto_ready *r = &ready->u.ready;
    if (key_len == 0 || key_len > EB_IDMAP_KEY_MAX) {
        snprintf(err, err_len, "worker identity of %zu bytes is not usable", key_len);
        return EB_ERR_INVALID;
    }
    /* Check every model against what other workers announced before changing anything. */
    size_t new_models = 0;
    for (uint32_t i = 0; i < r->n_models; i++) {
        const eb_proto_model_desc *d = &r->models[i];
        eb_broker_model *m = eb_workers_model(w, d->name);
        if (!m) {
            new_models++;
            continue;
        }
        if (m->input && m->input != d->input) {
            snprintf(err, err_len,
                     "model \"%s\": worker announces input \"%s\" but other workers serve it "
                     "with input \"%s\"; run one kind of model under one name",
                     d->name, eb_proto_input_kind_str(d->input),
                     eb_proto_input_kind_str(m->input));
            return EB_ERR_INVALID;
        }
        if (m->dims && m->dims != d->dims && m->n_workers > 0) {
            snprintf(err, err_len,
                     "model \"%s\": worker announces %u dimensions but connected workers "
                     "serve %u; stop them first or use another model name",
                     d->name, d->dims, m->dims);
            return EB_ERR_INVALID;
        }
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(r->models[j].name, d->name) == 0) {
                snprintf(err, err_len, "model \"%s\" is announced twice", d->name);
                return EB_ERR_INVALID;
            }
    }
    if (w->n_models + new_models > w->max_models) {
        snprintf(err, err_len, "worker announces %zu new models; the broker serves at most %zu",
                 new_models, w->max_models);
        return EB_ERR_TOO_LARGE;
    }
    eb_broker_worker *worker = calloc(1, sizeof *worker);
    if (!worker)
        return EB_ERR_NOMEM;
    worker->models = calloc(r->n_models ? r->n_models : 1, sizeof *worker->models);
    worker->links = calloc(r->n_models ? r->n_models : 1, sizeof *worker->links);
    if (!worker->models || !worker->links) {
        worker_free(worker);
        return EB_ERR_NOMEM;
    }
    for (uint32_t i = 0; i < r->n_models; i++) {
        const eb_proto_model_desc *d = &r->models[i];
        eb_broker_model *m = eb_workers_model_get_or_add(w, d->name);
        if (!m) {
            worker_free(worker);
            return EB_ERR_NOMEM;
        }
        if (!m->input || m->n_workers == 0) {
            m->input = d->input;
            m->dims = d->dims;
        }
        snprintf(m->model_rev, sizeof m->model_rev, "%s", d->model_rev ? d->model_rev : "");
        snprintf(m->preproc_rev, sizeof m->preproc_rev, "%s",
                 d->preproc_rev ? d->preproc_rev : "");
        worker->models[i] = m;
    }
    if (eb_idmap_put(w->by_key, key, key_len, worker) != EB_OK) {
        worker_free(worker);
        return EB_ERR_NOMEM;
    }
    worker->n_models = r->n_models;
    for (uint32_t i = 0; i < r->n_models; i++)
        worker->models[i]->n_workers++;
    memcpy(worker->key, key, key_len);
    worker->key_len = key_len;
    worker->socket = socket;
    worker->ready = *ready;
    memset(ready, 0, sizeof *ready);
    worker->max_batch = worker->ready.u.ready.max_batch_items;
    if (worker->max_batch > max_batch_cap)
        worker->max_batch = max_batch_cap;
    if (worker->max_batch == 0)
        worker->max_batch = 1;
    worker->healthy = true;
    worker->connected_us = worker->last_seen_us = worker->last_sent_us = now_us;
    worker->refs = 1;
    live_append(w, worker);
    w->count++;
    /* Credit starts at zero: the worker announces it with CREDIT (docs/protocol.md). */
    worker->credit = 0;
    *out = worker;
    return EB_OK;
}

void eb_workers_touch(eb_workers *w, eb_broker_worker *worker, int64_t now_us)
{
    worker->last_seen_us = now_us;
    if (w->live_tail != worker) {
        live_unlink(w, worker);
        live_append(w, worker);
    }
}

eb_broker_worker *eb_workers_oldest(const eb_workers *w)
{
    return w->live_head;
}

void eb_workers_set_credit(eb_workers *w, eb_broker_worker *worker, uint32_t credit)
{
    (void)w;
    worker->credit = credit;
    for (uint32_t i = 0; i < worker->n_models; i++) {
        if (credit == 0)
            ready_unlink(worker->models[i], worker);
        else if (worker->batches_sent == 0)
            ready_prepend(worker->models[i], worker); /* never used: least recently used */
        else
            ready_append(worker->models[i], worker);
    }
}

void eb_workers_add_credit(eb_workers *w, eb_broker_worker *worker, uint32_t more)
{
    uint64_t credit = (uint64_t)worker->credit + more;
    if (credit > EB_WORKER_CREDIT_MAX)
        credit = EB_WORKER_CREDIT_MAX;
    eb_workers_set_credit(w, worker, (uint32_t)credit);
}

eb_broker_worker *eb_workers_pick(const eb_broker_model *model)
{
    return model->ready_head;
}

void eb_workers_used(eb_workers *w, eb_broker_worker *worker, uint32_t items)
{
    (void)w;
    worker->credit = items >= worker->credit ? 0 : worker->credit - items;
    for (uint32_t i = 0; i < worker->n_models; i++) {
        ready_unlink(worker->models[i], worker);
        if (worker->credit > 0)
            ready_append(worker->models[i], worker);
    }
}

void eb_workers_remove(eb_workers *w, eb_broker_worker *worker)
{
    if (worker->removed)
        return;
    for (uint32_t i = 0; i < worker->n_models; i++) {
        ready_unlink(worker->models[i], worker);
        if (worker->models[i]->n_workers > 0)
            worker->models[i]->n_workers--;
    }
    eb_idmap_remove(w->by_key, worker->key, worker->key_len);
    live_unlink(w, worker);
    w->count--;
    worker->removed = true;
    worker->credit = 0;
    eb_broker_worker_unref(worker);
}

void eb_broker_worker_ref(eb_broker_worker *worker)
{
    worker->refs++;
}

void eb_broker_worker_unref(eb_broker_worker *worker)
{
    if (--worker->refs == 0)
        worker_free(worker);
}

const char *eb_broker_worker_id(const eb_broker_worker *worker)
{
    const char *id = worker->ready.u.ready.worker_id;
    return id ? id : "?";
}

bool eb_broker_worker_serves(const eb_broker_worker *worker, const eb_broker_model *model)
{
    return link_index(worker, model) >= 0;
}
