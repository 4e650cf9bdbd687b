/* eb_hash — content hashing over a canonical text header and the exact input bytes, on top of
 * libcrypto's EVP SHA-256 (which picks the SHA-NI / AVX2 code path of the machine). */
#include "eb_hash.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct eb_hash_ctx {
    EVP_MD_CTX *md;
};

/* SHA-256 fetched once. Passing EVP_sha256() instead makes OpenSSL 3 look the implementation up
 * in its provider store (under a lock) on every digest: callgrind counted ~8,000 instructions per
 * hash for that alone, more than hashing a 4 KB input, on a path run several times per request.
 * The reference is kept for the life of the process. */
static EVP_MD *g_sha256;
static pthread_once_t g_sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *sha256_md(void)
{
    pthread_once(&g_sha256_once, fetch_sha256);
    return g_sha256 ? g_sha256 : EVP_sha256();
}

static int known_kind(const char *kind)
{
    return kind && (strcmp(kind, "image") == 0 || strcmp(kind, "raw_rgb8") == 0 ||
                    strcmp(kind, "text") == 0);
}

eb_hash_ctx *eb_content_hash_begin(const char *kind, uint32_t width, uint32_t height,
                                   const char *opts)
{
    if (!known_kind(kind) || (opts && strchr(opts, '\n')))
        return NULL;
    char header[4096 + 128];
    int n = snprintf(header, sizeof header, "embroker-content-v1\nkind=%s\nw=%u\nh=%u\nopts=%s\n\n",
                     kind, width, height, opts ? opts : "");
    if (n < 0 || n >= (int)sizeof header)
        return NULL;
    eb_hash_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->md = EVP_MD_CTX_new();
    if (!ctx->md || EVP_DigestInit_ex(ctx->md, sha256_md(), NULL) != 1 ||
        EVP_DigestUpdate(ctx->md, header, (size_t)n) != 1) {
        EVP_MD_CTX_free(ctx->md);
        free(ctx);
        return NULL;
    }
    return ctx;
}

void eb_content_hash_update(eb_hash_ctx *ctx, const void *bytes, size_t len)
{
    if (ctx && len)
        EVP_DigestUpdate(ctx->md, bytes, len);
}

eb_status eb_content_hash_end(eb_hash_ctx **ctx, uint8_t out[EB_HASH_LEN])
{
    if (!ctx || !*ctx)
        return EB_ERR_INVALID;
    unsigned int n = 0;
    int ok = EVP_DigestFinal_ex((*ctx)->md, out, &n);
    EVP_MD_CTX_free((*ctx)->md);
    free(*ctx);
    *ctx = NULL;
    return ok == 1 && n == EB_HASH_LEN ? EB_OK : EB_ERR_INTERNAL;
}

void eb_content_opts(bool normalize, uint32_t output_dim, const char *instruction,
                     size_t instruction_len, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    if (output_dim)
        n += (size_t)snprintf(out + n, cap - n, "dim=%u", output_dim);
    if (instruction && instruction_len && n < cap) {
        uint8_t digest[EB_HASH_LEN];
        char hex[2 * EB_HASH_LEN + 1];
        eb_sha256(instruction, instruction_len, digest);
        n += (size_t)snprintf(out + n, cap - n, "%sinstruction_sha256=%s", n ? ";" : "",
                              eb_hex(digest, EB_HASH_LEN, hex));
    }
    if (!normalize && n < cap)
        snprintf(out + n, cap - n, "%snormalize=0", n ? ";" : "");
}

eb_status eb_content_hash(const char *kind, uint32_t width, uint32_t height, const char *opts,
                          const void *bytes, size_t len, uint8_t out[EB_HASH_LEN])
{
    eb_hash_ctx *ctx = eb_content_hash_begin(kind, width, height, opts);
    if (!ctx)
        return EB_ERR_INVALID;
    eb_content_hash_update(ctx, bytes, len);
    return eb_content_hash_end(&ctx, out);
}

void eb_sha256(const void *bytes, size_t len, uint8_t out[EB_HASH_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(bytes, len, out, &n, sha256_md(), NULL) != 1 || n != EB_HASH_LEN)
        memset(out, 0, EB_HASH_LEN); /* cannot happen with a working libcrypto */
}

char *eb_hex(const uint8_t *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * len] = '\0';
    return out;
}
