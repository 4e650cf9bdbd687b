-- 001: the table scans search and stores write.
-- Placeholders, replaced by `embroker migrate` from the configured models' dimensions:
--   {{IMAGE_DIM}}    image embedding length (SigLIP base: 768, so400m: 1152)
--   {{TEXT_DIM}}     text embedding length (Qwen3-Embedding-0.6B: 1024)
--   {{COMBINED_DIM}} IMAGE_DIM + TEXT_DIM: [w_img * image ; w_txt * text], see docs/search.md
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS "ProductEmbeddings" (
    "Id"                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "StoreId"           uuid        NOT NULL,   -- assigned before the store is written anywhere
    "ProductId"         text        NOT NULL,
    "BusinessTemplate"  text        NOT NULL,
    "SourceType"        text        NOT NULL,   -- 'catalog', 'scan', ...
    "ImageEmbedding"    vector({{IMAGE_DIM}}),
    "TextEmbedding"     vector({{TEXT_DIM}}),
    "CombinedEmbedding" vector({{COMBINED_DIM}}),
    "Model"             text        NOT NULL,   -- e.g. 'siglip+qwen3'
    "ModelRev"          text        NOT NULL,   -- revision of the weights that made the vectors
    "PreprocRev"        text        NOT NULL,
    "ContentHash"       bytea,                  -- worker-verified SHA-256 of the input
    "CreatedAt"         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT "ProductEmbeddings_StoreId_key" UNIQUE ("StoreId")
);

-- Catalogue rows are unique per product, source and model revision so backfills upsert; scan
-- rows (SourceType 'scan') are many per product and are excluded from this constraint.
CREATE UNIQUE INDEX IF NOT EXISTS "ProductEmbeddings_catalog_key"
    ON "ProductEmbeddings" ("ProductId", "SourceType", "ModelRev")
    WHERE "SourceType" <> 'scan';

-- The filter every search applies.
CREATE INDEX IF NOT EXISTS "ProductEmbeddings_template_source"
    ON "ProductEmbeddings" ("BusinessTemplate", "SourceType")
    WHERE "CombinedEmbedding" IS NOT NULL;

CREATE INDEX IF NOT EXISTS "ProductEmbeddings_product"
    ON "ProductEmbeddings" ("ProductId");
