"""Give infinity-emb the SigLIP checkpoint embroker serves, in the layout infinity-emb accepts.

infinity-emb serves images only through a full two-tower model (AutoModel with
get_image_features and get_text_features, plus an AutoProcessor with a tokenizer); embroker's
checkpoints (tools/mkcheckpoint, or a vision tower exported from Hugging Face) are the vision
tower alone. This script writes a SiglipModel whose vision tower holds exactly the weights of
CHECKPOINT (so image embeddings cost the same compute: get_image_features is the vision tower's
pooled output) and whose text tower is a one-layer stand-in with a small word-level tokenizer
that image requests never touch.

    python infinity_model.py CHECKPOINT OUT_DIR
"""
import os
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor,
                              SiglipModel, SiglipProcessor, SiglipVisionConfig)

    # through transformers, so the fields a checkpoint leaves at their defaults are filled in
    vcfg = SiglipVisionConfig.from_pretrained(src)
    vision = {k: getattr(vcfg, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                            "num_attention_heads", "num_channels", "image_size",
                                            "patch_size", "hidden_act", "layer_norm_eps")}
    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2}
    for i in range(997):
        vocab[f"w{i}"] = len(vocab)
    text = dict(vocab_size=len(vocab), hidden_size=vision["hidden_size"], intermediate_size=256,
                num_hidden_layers=1, num_attention_heads=vision["num_attention_heads"],
                max_position_embeddings=64, pad_token_id=0, eos_token_id=2)
    config = SiglipConfig(text_config=text, vision_config=vision)
    config.architectures = ["SiglipModel"]
    torch.manual_seed(0)
    model = SiglipModel(config).eval()
    weights = {k: v.float() for k, v in load_file(os.path.join(src, "model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(k.startswith("vision_model.") for k in missing):
        sys.exit(f"infinity_model: vision weights do not fit: unexpected {unexpected[:5]}, "
                 f"missing {[k for k in missing if k.startswith('vision_model.')][:5]}")
    os.makedirs(dst, exist_ok=True)
    model.save_pretrained(dst)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="</s>", model_max_length=64)
    processor = SiglipProcessor(image_processor=SiglipImageProcessor.from_pretrained(src), tokenizer=fast)
    processor.save_pretrained(dst)
    print(dst)


if __name__ == "__main__":
    main()
