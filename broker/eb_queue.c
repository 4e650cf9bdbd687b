/* eb_queue — intrusive FIFO queues of work items and the item state machine.
 *
 * The broker keeps one queue per model and priority class. Items are embedded in their request
 * (no allocation to queue one), linked through prev/next, and removable from anywhere so a
 * deadline or a cancel can pull one item out of the middle in O(1).
 */
#include "eb_queue.h"

#include <stdlib.h>
#include <string.h>

void eb_queue_init(eb_queue *q)
{
    q->head = q->tail = NULL;
    q->count = 0;
}

void eb_queue_push_back(eb_queue *q, eb_item *item)
{
    item->next = NULL;
    item->prev = q->tail;
    if (q->tail)
        q->tail->next = item;
    else
        q->head = item;
    q->tail = item;
    q->count++;
    item->state = EB_ITEM_QUEUED;
}

void eb_queue_push_front(eb_queue *q, eb_item *item)
{
    item->prev = NULL;
    item->next = q->head;
    if (q->head)
        q->head->prev = item;
    else
        q->tail = item;
    q->head = item;
    q->count++;
    item->state = EB_ITEM_QUEUED;
}

void eb_queue_remove(eb_queue *q, eb_item *item)
{
    if (item->prev)
        item->prev->next = item->next;
    else
        q->head = item->next;
    if (item->next)
        item->next->prev = item->prev;
    else
        q->tail = item->prev;
    item->prev = item->next = NULL;
    q->count--;
}

eb_item *eb_queue_pop(eb_queue *q)
{
    eb_item *item = q->head;
    if (item)
        eb_queue_remove(q, item);
    return item;
}

bool eb_item_finish(eb_item *item, int32_t status, const char *message)
{
    if (item->state == EB_ITEM_DONE)
        return false;
    item->state = EB_ITEM_DONE;
    item->batch = NULL;
    item->status = status;
    free(item->error);
    item->error = (status != 0 && message) ? strdup(message) : NULL;
    return true;
}

void eb_item_release(eb_item *item, void (*unref)(struct eb_broker_worker *))
{
    free(item->error);
    item->error = NULL;
    if (item->has_result) {
        zmq_msg_close(&item->result);
        item->has_result = false;
    }
    if (item->worker && unref)
        unref(item->worker);
    item->worker = NULL;
    item->state = EB_ITEM_NEW;
    item->batch = NULL;
    item->dispatches = 0;
    item->status = 0;
    item->has_hash = false;
    item->dims = 0;
    item->queue_us = 0;
    item->has_key = false;
    item->cached = false;
    item->leads = false;
    item->merge_leader = item->waiters = item->merge_prev = item->merge_next = NULL;
    item->cache_us = -1;
}
