/* eb_mpack — small msgpack-c packing helpers for the maps the broker builds by hand (health).
 *
 * Each writes one string, or one "key": value pair, through a msgpack_packer; NULL strings are
 * packed as "". The caller counts the pairs for msgpack_pack_map. */
#ifndef EB_MPACK_H
#define EB_MPACK_H

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>

void eb_mpack_str(msgpack_packer *pk, const char *s);
void eb_mpack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value);
void eb_mpack_kv_i64(msgpack_packer *pk, const char *key, int64_t value);
void eb_mpack_kv_str(msgpack_packer *pk, const char *key, const char *value);
void eb_mpack_kv_bool(msgpack_packer *pk, const char *key, bool value);

#endif
