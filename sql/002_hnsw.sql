-- 002: HNSW index for inner-product search on CombinedEmbedding.
-- pgvector indexes `vector` up to 2,000 dimensions; above that `embroker migrate` uses the
-- halfvec variant (002_hnsw_halfvec.sql) instead of this file. Queries must order by the same
-- expression as the index ("CombinedEmbedding" <#> $1, or the halfvec cast) for it to be used.
CREATE INDEX IF NOT EXISTS "ProductEmbeddings_combined_hnsw"
    ON "ProductEmbeddings" USING hnsw ("CombinedEmbedding" vector_ip_ops)
    WITH (m = 16, ef_construction = 64);
