/* eb_idmap — a hash map from short byte strings (ZMQ identities, segment names) to pointers.
 *
 * The broker looks up the peer of every message by its routing identity; this map makes that
 * O(1) without allocating per lookup. Keys are copied into the map (at most EB_IDMAP_KEY_MAX
 * bytes); values are borrowed pointers the map never frees. Open addressing with linear probing
 * and backward-shift deletion (no tombstones), grown at 50% load.
 *
 * Not thread-safe.
 */
#ifndef EB_IDMAP_H
#define EB_IDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

enum { EB_IDMAP_KEY_MAX = 300 };

typedef struct eb_idmap eb_idmap;

/* A new empty map, or NULL when out of memory. */
eb_idmap *eb_idmap_new(void);

/* Free the map (not the values); sets *map to NULL. NULL-safe. */
void eb_idmap_destroy(eb_idmap **map);

/* The value stored under key, or NULL. */
void *eb_idmap_get(const eb_idmap *map, const void *key, size_t key_len);

/* Store value (non-NULL) under key, replacing any previous value. EB_ERR_INVALID for an empty
 * or over-long key or a NULL value, EB_ERR_NOMEM. */
eb_status eb_idmap_put(eb_idmap *map, const void *key, size_t key_len, void *value);

/* Remove key; returns the value it had, or NULL when absent. */
void *eb_idmap_remove(eb_idmap *map, const void *key, size_t key_len);

/* Number of keys. */
size_t eb_idmap_count(const eb_idmap *map);

#endif
