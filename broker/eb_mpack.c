/* eb_mpack — see eb_mpack.h. */
#include "eb_mpack.h"

#include <string.h>

void eb_mpack_str(msgpack_packer *pk, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s ? s : "", n);
}

void eb_mpack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value)
{
    eb_mpack_str(pk, key);
    msgpack_pack_uint64(pk, value);
}

void eb_mpack_kv_i64(msgpack_packer *pk, const char *key, int64_t value)
{
    eb_mpack_str(pk, key);
    msgpack_pack_int64(pk, value);
}

void eb_mpack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    eb_mpack_str(pk, key);
    eb_mpack_str(pk, value);
}

void eb_mpack_kv_bool(msgpack_packer *pk, const char *key, bool value)
{
    eb_mpack_str(pk, key);
    if (value)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}
