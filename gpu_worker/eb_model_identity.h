/* eb_model_identity — "identity", a TEST-ONLY model that embeds the exact bytes it receives.
 *
 * Like Triton's identity backend it exists to test and measure the serving path (broker, worker,
 * shared memory, batching) without a neural network: its output depends only on the input bytes,
 * so a test can compute the vector it must get back. Never use it to answer real queries.
 *
 * The embedding of input bytes X (the exact bytes: encoded image file, raw pixels or UTF-8 text):
 *
 *   d      = SHA-256(X)
 *   block_k = SHA-256(d || k as 4 bytes little-endian)        for k = 0, 1, 2, …
 *   byte_j = byte j of block_0 || block_1 || …
 *   v_j    = (byte_j - 127.5) / 127.5                           for j < dims (or output_dim)
 *   out    = v / ||v||_2   when normalize (the default), else v
 *
 * Two registry names share this implementation: "identity" (input kind image: encoded images and
 * raw RGB8) and "identity-text" (input kind text). Configuration keys (eb_config):
 *   identity_dims        embedding length, default 64, in [1, 65536]
 *   identity_max_batch   largest batch, default 32, in [1, 4096]
 *   identity_delay_ms    sleep this long per item, default 0 (tests use it to kill a worker
 *                        while a batch is in flight)
 *   identity_forward_delay_ms  sleep this long once per forward (run_batch call) whatever its
 *                        size, default 0: a stand-in for a GPU, whose forward time barely depends
 *                        on the batch size, so the worker's batching can be measured
 *   identity_log_file    when set, one line per processed item is appended: the hex SHA-256 of
 *                        its bytes (tests check which inputs reached a worker)
 *   identity_forward_log_file  when set, one line per forward (run_batch call) is appended: its
 *                        item count, then the hex SHA-256 of each item, space-separated (tests
 *                        check how the worker grouped inputs into forwards)
 *   identity_corrupt_after  after this many processed items (canary runs included) every output
 *                        is silently wrong (+0.5 on its first value): a simulated broken device,
 *                        so tests can see the worker's canary catch it; default -1 (never)
 * An input whose bytes begin with "identity:fail" fails with EB_ERR_MODEL (tests check that one
 * bad item fails alone). */
#ifndef EB_MODEL_IDENTITY_H
#define EB_MODEL_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_model.h"

#define EB_MODEL_IDENTITY_FAIL_PREFIX "identity:fail"

extern const eb_model_ops eb_model_identity_ops;      /* "identity": image + raw_rgb8 */
extern const eb_model_ops eb_model_identity_text_ops; /* "identity-text": text */

/* The identity embedding of `bytes` (see above) into out (dims floats). Pure; thread-safe. Tests
 * and benchmarks call it to compute the expected vector. */
void eb_model_identity_embed(const void *bytes, size_t len, uint32_t dims, bool normalize,
                             float *out);

/* Items this loaded identity model has processed so far (state from load()). */
uint64_t eb_model_identity_processed(const void *state);

#endif
