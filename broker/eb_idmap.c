/* eb_idmap — open-addressing hash map from byte-string keys to borrowed pointers.
 *
 * Slots hold a copy of the key (keys are short: ZMQ identities are at most 255 bytes) and its
 * hash; linear probing keeps lookups in one or two cache lines at the load factors used here,
 * and backward-shift deletion keeps probe sequences short without tombstones.
 */
#include "eb_idmap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct idmap_slot {
    uint64_t hash; /* 0 = empty (real hashes are forced nonzero) */
    void *value;
    uint16_t key_len;
    uint8_t *key; /* malloc'ed copy */
} idmap_slot;

struct eb_idmap {
    idmap_slot *slots;
    size_t cap; /* power of two */
    size_t count;
};

/* FNV-1a, 64-bit: identities are short and not attacker-chosen in a way that matters here
 * (ROUTER assigns them unless a peer sets its own; a peer flooding its own collisions only
 * slows down lookups). */
static uint64_t hash_bytes(const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

eb_idmap *eb_idmap_new(void)
{
    eb_idmap *map = calloc(1, sizeof *map);
    if (!map)
        return NULL;
    map->cap = 64;
    map->slots = calloc(map->cap, sizeof *map->slots);
    if (!map->slots) {
        free(map);
        return NULL;
    }
    return map;
}

void eb_idmap_destroy(eb_idmap **map)
{
    if (!map || !*map)
        return;
    eb_idmap *m = *map;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    free(m);
    *map = NULL;
}

static size_t find_slot(const eb_idmap *map, const void *key, size_t key_len, uint64_t h,
                        bool *found)
{
    size_t mask = map->cap - 1;
    size_t i = (size_t)h & mask;
    for (;;) {
        const idmap_slot *s = &map->slots[i];
        if (s->hash == 0) {
            *found = false;
            return i;
        }
        if (s->hash == h && s->key_len == key_len && memcmp(s->key, key, key_len) == 0) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
}

void *eb_idmap_get(const eb_idmap *map, const void *key, size_t key_len)
{
    if (!key_len || key_len > EB_IDMAP_KEY_MAX)
        return NULL;
    bool found;
    size_t i = find_slot(map, key, key_len, hash_bytes(key, key_len), &found);
    return found ? map->slots[i].value : NULL;
}

static eb_status grow(eb_idmap *map)
{
    size_t cap = map->cap * 2;
    idmap_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return EB_ERR_NOMEM;
    for (size_t i = 0; i < map->cap; i++) {
        idmap_slot *s = &map->slots[i];
        if (!s->hash)
            continue;
        size_t j = (size_t)s->hash & (cap - 1);
        while (slots[j].hash)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(map->slots);
    map->slots = slots;
    map->cap = cap;
    return EB_OK;
}

eb_status eb_idmap_put(eb_idmap *map, const void *key, size_t key_len, void *value)
{
    if (!key_len || key_len > EB_IDMAP_KEY_MAX || !value)
        return EB_ERR_INVALID;
    if ((map->count + 1) * 2 > map->cap) {
        eb_status st = grow(map);
        if (st != EB_OK)
            return st;
    }
    uint64_t h = hash_bytes(key, key_len);
    bool found;
    size_t i = find_slot(map, key, key_len, h, &found);
    if (found) {
        map->slots[i].value = value;
        return EB_OK;
    }
    uint8_t *copy = malloc(key_len);
    if (!copy)
        return EB_ERR_NOMEM;
    memcpy(copy, key, key_len);
    map->slots[i] = (idmap_slot){.hash = h, .value = value, .key_len = (uint16_t)key_len,
                                 .key = copy};
    map->count++;
    return EB_OK;
}

void *eb_idmap_remove(eb_idmap *map, const void *key, size_t key_len)
{
    if (!key_len || key_len > EB_IDMAP_KEY_MAX)
        return NULL;
    bool found;
    size_t i = find_slot(map, key, key_len, hash_bytes(key, key_len), &found);
    if (!found)
        return NULL;
    void *value = map->slots[i].value;
    free(map->slots[i].key);
    map->slots[i] = (idmap_slot){0};
    map->count--;
    /* Backward-shift: move later entries of the probe run into the hole when their home slot
     * is at or before it (cyclically), so lookups never stop early at the hole. */
    size_t mask = map->cap - 1, hole = i, j = i;
    for (;;) {
        j = (j + 1) & mask;
        idmap_slot *s = &map->slots[j];
        if (!s->hash)
            break;
        size_t home = (size_t)s->hash & mask;
        bool movable = (hole <= j) ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            map->slots[hole] = *s;
            *s = (idmap_slot){0};
            hole = j;
        }
    }
    return value;
}

size_t eb_idmap_count(const eb_idmap *map)
{
    return map->count;
}
