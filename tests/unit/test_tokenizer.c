/* test_tokenizer — eb_tokenizer against the Hugging Face tokenizers library.
 *
 * The reference ids come from tools/reference/qwen3_tokenizer.py (tokenizer.encode(text,
 * add_special_tokens=False)) in tests/fixtures/qwen3_tokenizer/: every corpus string must give
 * exactly those ids, and the added-token flags Qwen3 leaves off (lstrip, rstrip, single_word,
 * normalized) are checked on a copy of the file with them switched on. The rest covers what the
 * reference does not: invalid UTF-8, the empty text, eos, the token limit, the query form, damaged
 * files and use from several threads. Needs models/qwen3-tokenizer/tokenizer.json (fetched by
 * scripts/setup); exits 77 without it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eb_test.h"
#include "eb_tokenizer.h"

#define QWEN3_EOS 151643

static eb_tokenizer *g_tok;
static char g_tok_path[4096];

typedef struct corpus_entry {
    char *text;
    size_t len;
    int32_t *ids;
    size_t n_ids;
} corpus_entry;

static corpus_entry *g_corpus;
static size_t g_corpus_n;

/* ---- fixtures ------------------------------------------------------------------------------- */

static int32_t *json_ids(const cJSON *arr, size_t *n)
{
    *n = (size_t)cJSON_GetArraySize(arr);
    int32_t *ids = malloc((*n ? *n : 1) * sizeof *ids);
    size_t k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) ids[k++] = (int32_t)e->valueint;
    return ids;
}

/* Reads a JSONL fixture of {"text", "ids"} lines; lines without "text" are skipped. */
static corpus_entry *load_jsonl(const char *relative, size_t *n_out)
{
    char path[4096];
    eb_test_path(path, sizeof path, relative);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open fixture %s; regenerate with tools/reference/qwen3_tokenizer.py\n",
                path);
        return NULL;
    }
    corpus_entry *v = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    while (getline(&line, &line_cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "ids");
        if (cJSON_IsString(text) && cJSON_IsArray(ids)) {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                v = realloc(v, cap * sizeof *v);
            }
            v[n].text = strdup(text->valuestring);
            v[n].len = strlen(text->valuestring);
            v[n].ids = json_ids(ids, &v[n].n_ids);
            n++;
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    *n_out = n;
    return v;
}

static void free_entries(corpus_entry *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].text);
        free(v[i].ids);
    }
    free(v);
}

/* Prints a text with escapes so control and invisible characters show. */
static void print_escaped(const char *s, size_t len)
{
    for (size_t i = 0; i < len && i < 400; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            printf("\\n");
        else if (c == '\r')
            printf("\\r");
        else if (c == '\t')
            printf("\\t");
        else if (c < 0x20 || c == 0x7F)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    if (len > 400)
        printf("... (%zu bytes)", len);
}

/* Encodes one entry and compares; prints the first difference. Returns 1 when equal. */
static int check_entry(const eb_tokenizer *tok, eb_tokenizer_scratch *s, const corpus_entry *e,
                       size_t index)
{
    size_t cap = eb_tokenizer_max_ids(e->len);
    int32_t *ids = malloc(cap * sizeof *ids);
    size_t n = 0;
    char err[512] = "";
    eb_status st = eb_tokenizer_encode(tok, s, e->text, e->len, NULL, ids, cap, &n, err,
                                       sizeof err);
    int ok = st == EB_OK && n == e->n_ids && memcmp(ids, e->ids, n * sizeof *ids) == 0;
    if (!ok) {
        printf("MISMATCH corpus line %zu: \"", index + 1);
        print_escaped(e->text, e->len);
        printf("\"\n");
        if (st != EB_OK) {
            printf("  encode failed: %s\n", err);
        } else {
            size_t pos = 0;
            while (pos < n && pos < e->n_ids && ids[pos] == e->ids[pos])
                pos++;
            printf("  first difference at id position %zu (ours %zu ids, tokenizers %zu)\n", pos,
                   n, e->n_ids);
            printf("  ours:       ");
            for (size_t k = pos; k < n && k < pos + 8; k++)
                printf(" %d(%s)", ids[k], eb_tokenizer_id_token(tok, ids[k]));
            printf("\n  tokenizers: ");
            for (size_t k = pos; k < e->n_ids && k < pos + 8; k++)
                printf(" %d(%s)", e->ids[k], eb_tokenizer_id_token(tok, e->ids[k]));
            printf("\n");
        }
    }
    free(ids);
    return ok;
}

static eb_status encode(const char *text, size_t len, const eb_tokenizer_options *o,
                        int32_t *ids, size_t cap, size_t *n, char *err, size_t err_len)
{
    return eb_tokenizer_encode(g_tok, NULL, text, len, o, ids, cap, n, err, err_len);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_corpus_matches_tokenizers(void **state)
{
    (void)state;
    assert_true(g_corpus_n >= 2000);
    eb_tokenizer_scratch *s = eb_tokenizer_scratch_new(g_tok);
    assert_non_null(s);
    size_t bad = 0;
    /* Twice with the same scratch: the second pass runs from the word cache. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < g_corpus_n; i++)
            if (!check_entry(g_tok, s, &g_corpus[i], i) && ++bad >= 10)
                goto done;
done:
    eb_tokenizer_scratch_destroy(&s);
    assert_null(s);
    assert_int_equal(bad, 0);
}

static void test_corpus_without_scratch(void **state)
{
    (void)state;
    size_t bad = 0;
    for (size_t i = 0; i < g_corpus_n; i += 37)
        bad += !check_entry(g_tok, NULL, &g_corpus[i], i);
    assert_int_equal(bad, 0);
}

static void test_known_ids(void **state)
{
    (void)state;
    int32_t ids[16];
    size_t n;
    char err[256];
    /* From tokenizers: "Hello world" -> Hello, Ġworld. */
    assert_int_equal(encode("Hello world", 11, NULL, ids, 16, &n, err, sizeof err), EB_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 9707);
    assert_int_equal(ids[1], 1879);
    assert_int_equal(eb_tokenizer_eos_id(g_tok), QWEN3_EOS);
    assert_int_equal(eb_tokenizer_token_id(g_tok, "<|im_end|>"), 151645);
    assert_int_equal(eb_tokenizer_token_id(g_tok, "Ġworld"), 1879);
    assert_int_equal(eb_tokenizer_token_id(g_tok, "no such token at all"), -1);
    assert_string_equal(eb_tokenizer_id_token(g_tok, 9707), "Hello");
    assert_string_equal(eb_tokenizer_id_token(g_tok, QWEN3_EOS), "<|endoftext|>");
    assert_null(eb_tokenizer_id_token(g_tok, -1));
    assert_null(eb_tokenizer_id_token(g_tok, 1 << 30));
    assert_int_equal(eb_tokenizer_vocab_size(g_tok), 151669);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len;
        size_t offset;
        const char *why;
    } cases[] = {
        {"ab\xC0\xAF", 4, 2, "overlong"},
        {"\xE0\x80\xAF", 3, 0, "overlong"},
        {"\xF0\x80\x80\xAF", 4, 0, "overlong"},
        {"x\xED\xA0\x80y", 5, 1, "surrogate"},
        {"\xED\xBF\xBF", 3, 0, "surrogate"},
        {"abc\xE2\x82", 5, 3, "truncated"},
        {"a\xE2\x82x", 4, 1, "truncated"},
        {"\xF0\x9F\x98", 3, 0, "truncated"},
        {"ok \xFF", 4, 3, "never valid"},
        {"\xFE", 1, 0, "never valid"},
        {"\x80", 1, 0, "continuation"},
        {"\xF4\x90\x80\x80", 4, 0, "U+10FFFF"},
        {"\xF5\x80\x80\x80", 4, 0, "never valid"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t ids[32];
        size_t n = 99;
        char err[256] = "";
        eb_tokenizer_options o = {.append_eos = true};
        eb_status st = encode(cases[i].text, cases[i].len, &o, ids, 32, &n, err, sizeof err);
        char want[64];
        snprintf(want, sizeof want, "offset %zu", cases[i].offset);
        if (st != EB_ERR_INVALID || !strstr(err, want) || !strstr(err, cases[i].why))
            printf("case %zu: status %d, message \"%s\"\n", i, st, err);
        assert_int_equal(st, EB_ERR_INVALID);
        assert_int_equal(n, 0);
        assert_non_null(strstr(err, want));
        assert_non_null(strstr(err, cases[i].why));
    }
    /* Valid edge cases: U+0000, U+D7FF, U+E000, U+10FFFF and a 4-byte emoji pass. */
    int32_t ids[32];
    size_t n;
    char err[256];
    assert_int_equal(encode("\x00\xED\x9F\xBF\xEE\x80\x80\xF4\x8F\xBF\xBF\xF0\x9F\x98\x80", 15,
                            NULL, ids, 32, &n, err, sizeof err),
                     EB_OK);
    assert_true(n > 0);
}

static void test_empty_and_eos(void **state)
{
    (void)state;
    int32_t ids[8];
    size_t n = 99;
    char err[256];
    assert_int_equal(encode("", 0, NULL, ids, 8, &n, err, sizeof err), EB_OK);
    assert_int_equal(n, 0);
    eb_tokenizer_options eos = {.append_eos = true};
    assert_int_equal(encode(NULL, 0, &eos, ids, 8, &n, err, sizeof err), EB_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], QWEN3_EOS);
    /* eos after the text's own ids, also after a text ending in the eos token itself. */
    assert_int_equal(encode("Hello world", 11, &eos, ids, 8, &n, err, sizeof err), EB_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 9707);
    assert_int_equal(ids[1], 1879);
    assert_int_equal(ids[2], QWEN3_EOS);
    assert_int_equal(encode("x<|endoftext|>", 14, &eos, ids, 8, &n, err, sizeof err), EB_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], QWEN3_EOS);
    assert_int_equal(ids[2], QWEN3_EOS);
    /* For every corpus string: eos appended to exactly the reference ids. */
    for (size_t i = 0; i < g_corpus_n; i += 11) {
        const corpus_entry *e = &g_corpus[i];
        size_t cap = eb_tokenizer_max_ids(e->len);
        int32_t *got = malloc(cap * sizeof *got);
        assert_int_equal(encode(e->text, e->len, &eos, got, cap, &n, err, sizeof err), EB_OK);
        assert_int_equal(n, e->n_ids + 1);
        assert_memory_equal(got, e->ids, e->n_ids * sizeof *got);
        assert_int_equal(got[n - 1], QWEN3_EOS);
        free(got);
    }
}

/* The longest corpus entry, for the limit tests. */
static const corpus_entry *longest(void)
{
    const corpus_entry *best = &g_corpus[0];
    for (size_t i = 0; i < g_corpus_n; i++)
        if (g_corpus[i].n_ids > best->n_ids)
            best = &g_corpus[i];
    return best;
}

static void test_max_tokens(void **state)
{
    (void)state;
    const corpus_entry *e = longest();
    assert_true(e->n_ids > 100);
    size_t cap = eb_tokenizer_max_ids(e->len);
    int32_t *ids = malloc(cap * sizeof *ids);
    size_t n = 99;
    char err[256] = "";

    /* error policy: refused, with a message naming the limit. */
    eb_tokenizer_options o = {.append_eos = true, .max_tokens = 64,
                              .overflow = EB_TOKENIZER_OVERFLOW_ERROR};
    assert_int_equal(encode(e->text, e->len, &o, ids, cap, &n, err, sizeof err),
                     EB_ERR_TOO_LARGE);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err, "max_tokens 64"));

    /* truncate: the first max_tokens-1 reference ids, then eos. */
    o.overflow = EB_TOKENIZER_OVERFLOW_TRUNCATE;
    assert_int_equal(encode(e->text, e->len, &o, ids, 64, &n, err, sizeof err), EB_OK);
    assert_int_equal(n, 64);
    assert_memory_equal(ids, e->ids, 63 * sizeof *ids);
    assert_int_equal(ids[63], QWEN3_EOS);

    /* truncate without eos: the first max_tokens ids. */
    o.append_eos = false;
    assert_int_equal(encode(e->text, e->len, &o, ids, 64, &n, err, sizeof err), EB_OK);
    assert_int_equal(n, 64);
    assert_memory_equal(ids, e->ids, 64 * sizeof *ids);

    /* max_tokens 1 with eos: just the eos. */
    o.append_eos = true;
    o.max_tokens = 1;
    assert_int_equal(encode(e->text, e->len, &o, ids, 1, &n, err, sizeof err), EB_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], QWEN3_EOS);

    /* exactly at the limit (ids + eos == max_tokens) passes under the error policy. */
    o.overflow = EB_TOKENIZER_OVERFLOW_ERROR;
    o.max_tokens = e->n_ids + 1;
    assert_int_equal(encode(e->text, e->len, &o, ids, cap, &n, err, sizeof err), EB_OK);
    assert_int_equal(n, e->n_ids + 1);
    o.max_tokens = e->n_ids;
    assert_int_equal(encode(e->text, e->len, &o, ids, cap, &n, err, sizeof err),
                     EB_ERR_TOO_LARGE);

    /* No limit but a small buffer: refused, never cut silently. */
    eb_tokenizer_options none = {0};
    assert_int_equal(encode(e->text, e->len, &none, ids, 10, &n, err, sizeof err),
                     EB_ERR_TOO_LARGE);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err, "buffer"));
    free(ids);
}

static const corpus_entry *find_entry(const char *prefix)
{
    for (size_t i = 0; i < g_corpus_n; i++)
        if (strncmp(g_corpus[i].text, prefix, strlen(prefix)) == 0)
            return &g_corpus[i];
    return NULL;
}

static void test_query_format(void **state)
{
    (void)state;
    const char *task = "Given a web search query, retrieve relevant passages that answer the query";
    const char *text = "What is the capital of China?";
    char buf[256];
    size_t len = eb_tokenizer_format_query(buf, sizeof buf, task, strlen(task), text,
                                           strlen(text));
    const char *want = "Instruct: Given a web search query, retrieve relevant passages that "
                       "answer the query\nQuery:What is the capital of China?";
    assert_int_equal(len, strlen(want));
    assert_string_equal(buf, want);
    assert_int_equal(eb_tokenizer_format_query(NULL, 0, task, strlen(task), text, strlen(text)),
                     len);
    char small[8] = "unset";
    eb_tokenizer_format_query(small, sizeof small, task, strlen(task), text, strlen(text));
    assert_string_equal(small, "unset"); /* too small: nothing written */

    const corpus_entry *e = find_entry("Instruct: Given a web search query");
    assert_non_null(e);
    int32_t ids[128];
    size_t n;
    char err[256];
    eb_tokenizer_options eos = {.append_eos = true};
    eb_tokenizer_scratch *s = eb_tokenizer_scratch_new(g_tok);
    for (int with_scratch = 0; with_scratch < 2; with_scratch++) {
        assert_int_equal(eb_tokenizer_encode_query(g_tok, with_scratch ? s : NULL, task,
                                                   strlen(task), text, strlen(text), &eos, ids,
                                                   128, &n, err, sizeof err),
                         EB_OK);
        assert_int_equal(n, e->n_ids + 1);
        assert_memory_equal(ids, e->ids, e->n_ids * sizeof *ids);
        assert_int_equal(ids[n - 1], QWEN3_EOS);
    }
    eb_tokenizer_scratch_destroy(&s);
}

static void test_scratch_of_other_tokenizer(void **state)
{
    (void)state;
    char err[512];
    eb_tokenizer *other = eb_tokenizer_load(g_tok_path, err, sizeof err);
    assert_non_null(other);
    eb_tokenizer_scratch *s = eb_tokenizer_scratch_new(other);
    int32_t ids[8];
    size_t n;
    assert_int_equal(eb_tokenizer_encode(g_tok, s, "x", 1, NULL, ids, 8, &n, err, sizeof err),
                     EB_ERR_INVALID);
    eb_tokenizer_scratch_destroy(&s);
    eb_tokenizer_destroy(&other);
    assert_null(other);
    eb_tokenizer_destroy(&other); /* NULL is fine */
}

/* ---- added-token flags ---------------------------------------------------------------------- */

static void test_added_token_flags(void **state)
{
    (void)state;
    size_t n_entries = 0;
    corpus_entry *entries = load_jsonl("tests/fixtures/qwen3_tokenizer/added_flags.jsonl",
                                       &n_entries);
    assert_non_null(entries);
    assert_true(n_entries > 10);
    /* The first line names the flags; apply them to a copy of tokenizer.json. */
    char path[4096];
    eb_test_path(path, sizeof path, "tests/fixtures/qwen3_tokenizer/added_flags.jsonl");
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    assert_true(getline(&line, &cap, f) > 0);
    fclose(f);
    cJSON *head = cJSON_Parse(line);
    free(line);
    const cJSON *flags = cJSON_GetObjectItemCaseSensitive(head, "flags");
    assert_true(cJSON_IsObject(flags));

    size_t len;
    uint8_t *raw = eb_test_read_file(g_tok_path, &len);
    assert_non_null(raw);
    cJSON *root = cJSON_ParseWithLength((const char *)raw, len);
    free(raw);
    assert_non_null(root);
    cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    cJSON *a;
    cJSON_ArrayForEach(a, added)
    {
        const char *content = cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring;
        const cJSON *set = cJSON_GetObjectItemCaseSensitive(flags, content);
        const cJSON *kv;
        cJSON_ArrayForEach(kv, set)
        {
            cJSON_ReplaceItemInObjectCaseSensitive(a, kv->string,
                                                   cJSON_CreateBool(cJSON_IsTrue(kv)));
        }
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    cJSON_Delete(head);
    char err[512];
    eb_tokenizer *t = eb_tokenizer_load_json(json, strlen(json), "flags copy", err, sizeof err);
    free(json);
    if (!t)
        printf("%s\n", err);
    assert_non_null(t);
    size_t bad = 0;
    for (size_t i = 0; i < n_entries; i++)
        bad += !check_entry(t, NULL, &entries[i], i);
    eb_tokenizer_destroy(&t);
    free_entries(entries, n_entries);
    assert_int_equal(bad, 0);
}

/* ---- small hand-made files ------------------------------------------------------------------ */

/* A tiny byte-level file: letters a, b, c and their merges. */
#define TINY_HEAD                                                                                  \
    "{\"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": {\"type\": \"Sequence\", "          \
    "\"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\p{L}+|\\\\s+\"}, " \
    "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "                   \
    "\"add_prefix_space\": false, \"use_regex\": false}]}, \"added_tokens\": [{\"id\": 9, "        \
    "\"content\": \"<|endoftext|>\", \"special\": true, \"normalized\": false}], "                  \
    "\"model\": {\"type\": \"BPE\", "

static eb_tokenizer *tiny(const char *model_rest, char *err, size_t err_len)
{
    char json[2048];
    snprintf(json, sizeof json, "%s%s}}", TINY_HEAD, model_rest);
    return eb_tokenizer_load_json(json, strlen(json), "tiny", err, err_len);
}

static void test_merges_both_formats(void **state)
{
    (void)state;
    static const char *const models[] = {
        "\"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"abc\": 4, \"abcab\": 5}, "
        "\"merges\": [\"a b\", \"ab c\", \"abc ab\"]",
        "\"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"abc\": 4, \"abcab\": 5}, "
        "\"merges\": [[\"a\", \"b\"], [\"ab\", \"c\"], [\"abc\", \"ab\"]]",
    };
    for (size_t k = 0; k < 2; k++) {
        char err[512] = "";
        eb_tokenizer *t = tiny(models[k], err, sizeof err);
        if (!t)
            printf("%s\n", err);
        assert_non_null(t);
        int32_t ids[16];
        size_t n;
        /* "abcabx": x has no byte token here and vanishes (tokenizers drops unknown chars). */
        assert_int_equal(eb_tokenizer_encode(t, NULL, "abcab abcx", 10, NULL, ids, 16, &n, err,
                                             sizeof err),
                         EB_OK);
        assert_int_equal(n, 2);
        assert_int_equal(ids[0], 5);
        assert_int_equal(ids[1], 4);
        eb_tokenizer_options eos = {.append_eos = true};
        assert_int_equal(eb_tokenizer_encode(t, NULL, "cab", 3, &eos, ids, 16, &n, err,
                                             sizeof err),
                         EB_OK);
        assert_int_equal(n, 3);
        assert_int_equal(ids[0], 2);
        assert_int_equal(ids[1], 3);
        assert_int_equal(ids[2], 9);
        eb_tokenizer_destroy(&t);
    }
    /* ignore_merges: a word in the vocabulary is taken whole even when merges would not build
     * it ("cab" has no merge path: c + ab). */
    char err[512] = "";
    eb_tokenizer *t = tiny("\"ignore_merges\": true, \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, "
                           "\"ab\": 3, \"cab\": 4}, \"merges\": [\"a b\"]",
                           err, sizeof err);
    assert_non_null(t);
    int32_t ids[16];
    size_t n;
    assert_int_equal(eb_tokenizer_encode(t, NULL, "cab cabb", 8, NULL, ids, 16, &n, err,
                                         sizeof err),
                     EB_OK);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], 4);
    assert_int_equal(ids[1], 2); /* "cabb" is not in the vocabulary: c, ab, b */
    assert_int_equal(ids[2], 3);
    assert_int_equal(ids[3], 1);
    eb_tokenizer_destroy(&t);
}

static void test_damaged_files(void **state)
{
    (void)state;
    static const struct {
        const char *model;
        const char *expect;
    } cases[] = {
        {"\"merges\": []", "model.vocab is missing"},
        {"\"vocab\": [1, 2], \"merges\": []", "model.vocab is not an object"},
        {"\"vocab\": {\"a\": 0, \"b\": 1}", "model.merges is missing"},
        {"\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]", "needs token \"ab\""},
        {"\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a x\"]", "needs token \"x\""},
        {"\"vocab\": {\"a\": 0, \"ab\": 2}, \"merges\": [\"ab\"]", "model.merges[0]"},
        {"\"vocab\": {\"a\": 0, \"ab\": 2}, \"merges\": [42]", "model.merges[0]"},
        {"\"vocab\": {\"a\": 0, \"ab\": 2}, \"merges\": [[\"a\"]]", "model.merges[0]"},
        {"\"vocab\": {\"a\": -3}, \"merges\": []", "not an id"},
        {"\"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []", "gives id 0 to both"},
        {"\"dropout\": 0.1, \"vocab\": {\"a\": 0}, \"merges\": []", "dropout"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        eb_tokenizer *t = tiny(cases[i].model, err, sizeof err);
        if (t || !strstr(err, cases[i].expect))
            printf("case %zu: got \"%s\", want \"%s\"\n", i, err, cases[i].expect);
        assert_null(t);
        assert_non_null(strstr(err, cases[i].expect));
        assert_non_null(strstr(err, "tiny")); /* names the file */
    }
    char err[512] = "";
    assert_null(eb_tokenizer_load_json("{\"model\": ", 10, "cut", err, sizeof err));
    assert_non_null(strstr(err, "not valid JSON"));
    assert_null(eb_tokenizer_load("/nonexistent/tokenizer.json", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/tokenizer.json"));
    const char *bad_norm = "{\"normalizer\": {\"type\": \"Lowercase\"}, \"pre_tokenizer\": "
                           "{\"type\": \"ByteLevel\"}, \"model\": {\"vocab\": {\"a\": 0}, "
                           "\"merges\": []}}";
    assert_null(eb_tokenizer_load_json(bad_norm, strlen(bad_norm), "x", err, sizeof err));
    assert_non_null(strstr(err, "Lowercase"));
    const char *bad_split = "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": "
                            "\"a\"}, \"behavior\": \"MergedWithNext\"}, \"model\": {\"vocab\": "
                            "{\"a\": 0}, \"merges\": []}}";
    assert_null(eb_tokenizer_load_json(bad_split, strlen(bad_split), "x", err, sizeof err));
    assert_non_null(strstr(err, "MergedWithNext"));
    const char *bad_regex = "{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
                            "[{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, "
                            "\"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\"}]}, "
                            "\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}";
    assert_null(eb_tokenizer_load_json(bad_regex, strlen(bad_regex), "x", err, sizeof err));
    assert_non_null(strstr(err, "does not compile"));

    /* The real file with its vocabulary removed, and with one merge broken. */
    size_t len;
    uint8_t *raw = eb_test_read_file(g_tok_path, &len);
    assert_non_null(raw);
    cJSON *root = cJSON_ParseWithLength((const char *)raw, len);
    free(raw);
    cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    cJSON *merges = cJSON_DetachItemFromObjectCaseSensitive(model, "merges");
    cJSON_DeleteItemFromObjectCaseSensitive(model, "vocab");
    cJSON_AddItemToObject(model, "merges", merges);
    char *json = cJSON_PrintUnformatted(root);
    assert_null(eb_tokenizer_load_json(json, strlen(json), "no-vocab", err, sizeof err));
    assert_non_null(strstr(err, "model.vocab is missing"));
    free(json);
    cJSON_Delete(root);
}

/* ---- threads -------------------------------------------------------------------------------- */

typedef struct thread_arg {
    size_t start, bad;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    eb_tokenizer_scratch *s = eb_tokenizer_scratch_new(g_tok);
    for (size_t k = 0; k < g_corpus_n; k++) {
        size_t i = (a->start + k * 7) % g_corpus_n;
        a->bad += !check_entry(g_tok, s, &g_corpus[i], i);
    }
    eb_tokenizer_scratch_destroy(&s);
    return NULL;
}

static void test_threads_share_tokenizer(void **state)
{
    (void)state;
    enum { N = 4 };
    pthread_t th[N];
    thread_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (thread_arg){.start = (size_t)i * 101};
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    size_t bad = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        bad += args[i].bad;
    }
    assert_int_equal(bad, 0);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(void)
{
    eb_test_path(g_tok_path, sizeof g_tok_path, "models/qwen3-tokenizer/tokenizer.json");
    if (access(g_tok_path, R_OK) != 0) {
        printf("skip: %s missing; run scripts/setup to fetch the Qwen3 tokenizer\n", g_tok_path);
        return 77;
    }
    char err[512];
    g_tok = eb_tokenizer_load(g_tok_path, err, sizeof err);
    if (!g_tok) {
        printf("cannot load the Qwen3 tokenizer: %s\n", err);
        return 1;
    }
    g_corpus = load_jsonl("tests/fixtures/qwen3_tokenizer/corpus.jsonl", &g_corpus_n);
    if (!g_corpus)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus_matches_tokenizers),
        cmocka_unit_test(test_corpus_without_scratch),
        cmocka_unit_test(test_known_ids),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_empty_and_eos),
        cmocka_unit_test(test_max_tokens),
        cmocka_unit_test(test_query_format),
        cmocka_unit_test(test_scratch_of_other_tokenizer),
        cmocka_unit_test(test_added_token_flags),
        cmocka_unit_test(test_merges_both_formats),
        cmocka_unit_test(test_damaged_files),
        cmocka_unit_test(test_threads_share_tokenizer),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free_entries(g_corpus, g_corpus_n);
    eb_tokenizer_destroy(&g_tok);
    return rc;
}
