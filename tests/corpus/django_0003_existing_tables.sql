ALTER TABLE "library_book" ADD CONSTRAINT "library_book_author_id_6b4fe3fa_fk_library_author_id" FOREIGN KEY ("author_id") REFERENCES "library_author" ("id") DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "library_book_author_id_6b4fe3fa" ON "library_book" ("author_id");
