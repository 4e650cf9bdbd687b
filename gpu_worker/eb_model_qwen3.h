/* eb_model_qwen3 — the worker model "qwen3": UTF-8 texts in, Qwen3-Embedding vectors out
 * (eb_model.h interface over eb_tokenizer + eb_qwen3).
 *
 * Configuration keys:
 *   qwen3_dir              checkpoint directory (required)
 *   qwen3_tokenizer        tokenizer.json (default: <qwen3_dir>/tokenizer.json, else
 *                          models/qwen3-tokenizer/tokenizer.json as fetched by scripts/setup)
 *   qwen3_backend          auto | cpu | cuda (default auto)
 *   qwen3_threads          CPU compute threads (default: online CPUs)
 *   qwen3_max_batch        most texts per batch (default 32)
 *   qwen3_max_tokens       most tokens per text, <|endoftext|> included (default 512)
 *   qwen3_overflow         error | truncate: what a longer text gets (default error; never silent)
 *   qwen3_token_budget     most tokens per forward (default 4096): a batch is cut into forwards
 *                          by tokens, shortest texts first, so one long document does not hold up
 *                          many short queries
 * Every vector is L2-normalised (Qwen3-Embedding's pooling); normalize=false is refused per item.
 * preproc_rev hashes the tokenizer file and the token limit/overflow policy. */
#ifndef EB_MODEL_QWEN3_H
#define EB_MODEL_QWEN3_H

#include "eb_model.h"

extern const eb_model_ops eb_model_qwen3_ops;

#endif
