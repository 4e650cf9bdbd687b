-- 002 (variant for COMBINED_DIM > 2000, e.g. so400m 1152 + Qwen3 1024 = 2176): HNSW over a
-- half-precision cast; halfvec indexes up to 4,000 dimensions.
CREATE INDEX IF NOT EXISTS "ProductEmbeddings_combined_hnsw"
    ON "ProductEmbeddings" USING hnsw (("CombinedEmbedding"::halfvec({{COMBINED_DIM}})) halfvec_ip_ops)
    WITH (m = 16, ef_construction = 64);
