BEGIN;
--
-- Add field editor to book
--
ALTER TABLE "library_book" ADD COLUMN "editor_id" bigint NULL CONSTRAINT "library_book_editor_id_0e1d7a7c_fk_library_author_id" REFERENCES "library_author"("id") DEFERRABLE INITIALLY DEFERRED; SET CONSTRAINTS "library_book_editor_id_0e1d7a7c_fk_library_author_id" IMMEDIATE;
--
-- Add field slug to book
--
ALTER TABLE "library_book" ADD COLUMN "slug" varchar(50) DEFAULT 'untitled' NOT NULL;
ALTER TABLE "library_book" ALTER COLUMN "slug" DROP DEFAULT;
--
-- Alter field title on book
--
ALTER TABLE "library_book" ALTER COLUMN "title" TYPE varchar(500);
--
-- Alter field born on author
--
ALTER TABLE "library_author" ALTER COLUMN "born" SET NOT NULL;
--
-- Create constraint unique_slug on model book
--
ALTER TABLE "library_book" ADD CONSTRAINT "unique_slug" UNIQUE ("slug");
CREATE INDEX "library_book_editor_id_0e1d7a7c" ON "library_book" ("editor_id");
CREATE INDEX "library_book_slug_5f7a1e2b" ON "library_book" ("slug");
CREATE INDEX "library_book_slug_5f7a1e2b_like" ON "library_book" ("slug" varchar_pattern_ops);
COMMIT;
