/* eb_model_siglip — the worker model "siglip": encoded images or raw RGB8 in, SigLIP image
 * embeddings out (eb_model.h interface over eb_image + eb_preprocess + eb_siglip).
 *
 * Configuration keys (file, EMBROKER_* or --flags; see docs/operations.md):
 *   siglip_dir                checkpoint directory (Hugging Face layout; required)
 *   siglip_backend            auto | cpu | cuda (default auto: CUDA when a device is present)
 *   siglip_threads            CPU compute threads (default: online CPUs)
 *   siglip_max_batch          largest batch (default 32)
 *   image_max_pixels          decoded pixel limit (default 64,000,000)
 *   image_max_bytes           encoded size limit (default 64 MiB)
 *   image_alpha               drop (Pillow's convert("RGB"), default) | white (transformers'
 *                             convert_to_rgb compositing); see docs/images.md
 * model_rev comes from the weights (eb_checkpoint), preproc_rev from the preprocessing
 * parameters and our resize version, so neither can serve stale vectors after a change. */
#ifndef EB_MODEL_SIGLIP_H
#define EB_MODEL_SIGLIP_H

#include "eb_model.h"

extern const eb_model_ops eb_model_siglip_ops;

#endif
