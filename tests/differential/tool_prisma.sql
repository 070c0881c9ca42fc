-- Prisma Migrate `migrate deploy`: advisory lock 72707369, _prisma_migrations bookkeeping, each migration.sql sent as one multi-statement query (enums via CREATE TYPE, "CamelCase" tables, CREATE UNIQUE INDEX, ADD CONSTRAINT ... FOREIGN KEY ... ON DELETE CASCADE ON UPDATE CASCADE), ALTER TYPE ADD VALUE, a failed migration rolled back as a whole and recorded, then resolved and re-applied.
SELECT pg_advisory_lock(72707369);
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
);
SELECT "id", "checksum", "finished_at" IS NOT NULL AS finished, "migration_name", "logs", "rolled_back_at", "applied_steps_count" FROM "_prisma_migrations" ORDER BY "started_at" ASC, "migration_name";
-- 20240301000000_init
INSERT INTO "_prisma_migrations" ("id", "checksum", "logs", "started_at", "finished_at", "migration_name", "applied_steps_count", "rolled_back_at") VALUES ('0b9c7e1a-0000-4000-8000-000000000001', '5d1f0a4e', NULL, '2024-03-01 00:00:00+00', NULL, '20240301000000_init', 0, NULL);
-- CreateEnum
CREATE TYPE "Role" AS ENUM ('USER', 'ADMIN') \;
-- CreateTable
CREATE TABLE "User" (
    "id" SERIAL NOT NULL,
    "email" TEXT NOT NULL,
    "name" TEXT,
    "role" "Role" NOT NULL DEFAULT 'USER',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "User_pkey" PRIMARY KEY ("id")
) \;
-- CreateTable
CREATE TABLE "Post" (
    "id" SERIAL NOT NULL,
    "title" VARCHAR(255) NOT NULL,
    "published" BOOLEAN NOT NULL DEFAULT false,
    "authorId" INTEGER NOT NULL,

    CONSTRAINT "Post_pkey" PRIMARY KEY ("id")
) \;
-- CreateIndex
CREATE UNIQUE INDEX "User_email_key" ON "User"("email") \;
-- CreateIndex
CREATE INDEX "Post_authorId_idx" ON "Post"("authorId") \;
-- AddForeignKey
ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
UPDATE "_prisma_migrations" SET "finished_at" = '2024-03-01 00:00:01+00', "applied_steps_count" = "applied_steps_count" + 1 WHERE "id" = '0b9c7e1a-0000-4000-8000-000000000001';
-- application data
INSERT INTO "User" ("email", "name", "role", "updatedAt") SELECT 'u' || g || '@prisma.io', 'User ' || g, CASE WHEN g % 10 = 0 THEN 'ADMIN' ELSE 'USER' END::"Role", '2024-03-02 00:00:00' FROM generate_series(1, 50) g;
INSERT INTO "Post" ("title", "published", "authorId") SELECT 'Post ' || g, g % 2 = 0, 1 + g % 50 FROM generate_series(1, 120) g;
-- 20240302000000_profiles (fails at the FK: column type mismatch; the implicit transaction of the one query undoes everything)
INSERT INTO "_prisma_migrations" ("id", "checksum", "logs", "started_at", "finished_at", "migration_name", "applied_steps_count", "rolled_back_at") VALUES ('0b9c7e1a-0000-4000-8000-000000000002', '9a8b7c6d', NULL, '2024-03-02 00:00:00+00', NULL, '20240302000000_profiles', 0, NULL);
-- CreateTable
CREATE TABLE "Profile" (
    "id" SERIAL NOT NULL,
    "bio" TEXT,
    "userId" TEXT NOT NULL,

    CONSTRAINT "Profile_pkey" PRIMARY KEY ("id")
) \;
-- CreateIndex
CREATE UNIQUE INDEX "Profile_userId_key" ON "Profile"("userId") \;
-- AddForeignKey
ALTER TABLE "Profile" ADD CONSTRAINT "Profile_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;
UPDATE "_prisma_migrations" SET "logs" = 'db error: ERROR: foreign key constraint "Profile_userId_fkey" cannot be implemented' WHERE "id" = '0b9c7e1a-0000-4000-8000-000000000002';
SELECT to_regclass('"Profile"') IS NULL AS profile_absent, to_regclass('"Profile_userId_key"') IS NULL AS index_absent;
-- prisma migrate resolve --rolled-back, fixed migration.sql re-applied
UPDATE "_prisma_migrations" SET "rolled_back_at" = '2024-03-02 00:10:00+00' WHERE "id" = '0b9c7e1a-0000-4000-8000-000000000002';
INSERT INTO "_prisma_migrations" ("id", "checksum", "logs", "started_at", "finished_at", "migration_name", "applied_steps_count", "rolled_back_at") VALUES ('0b9c7e1a-0000-4000-8000-000000000003', '1e2f3a4b', NULL, '2024-03-02 00:20:00+00', NULL, '20240302000000_profiles', 0, NULL);
-- CreateTable
CREATE TABLE "Profile" (
    "id" SERIAL NOT NULL,
    "bio" TEXT,
    "userId" INTEGER NOT NULL,

    CONSTRAINT "Profile_pkey" PRIMARY KEY ("id")
) \;
-- CreateIndex
CREATE UNIQUE INDEX "Profile_userId_key" ON "Profile"("userId") \;
-- AddForeignKey
ALTER TABLE "Profile" ADD CONSTRAINT "Profile_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;
UPDATE "_prisma_migrations" SET "finished_at" = '2024-03-02 00:20:01+00', "applied_steps_count" = "applied_steps_count" + 1 WHERE "id" = '0b9c7e1a-0000-4000-8000-000000000003';
INSERT INTO "Profile" ("bio", "userId") SELECT 'bio ' || g, g FROM generate_series(1, 40) g;
-- 20240303000000_moderation
INSERT INTO "_prisma_migrations" ("id", "checksum", "logs", "started_at", "finished_at", "migration_name", "applied_steps_count", "rolled_back_at") VALUES ('0b9c7e1a-0000-4000-8000-000000000004', '2f3a4b5c', NULL, '2024-03-03 00:00:00+00', NULL, '20240303000000_moderation', 0, NULL);
-- AlterEnum
ALTER TYPE "Role" ADD VALUE 'MODERATOR' \;
-- AlterTable
ALTER TABLE "Post" ADD COLUMN     "viewCount" INTEGER NOT NULL DEFAULT 0,
ADD COLUMN     "slug" TEXT \;
-- AlterTable
ALTER TABLE "User" ALTER COLUMN "name" SET NOT NULL \;
-- DropForeignKey
ALTER TABLE "Post" DROP CONSTRAINT "Post_authorId_fkey" \;
-- CreateIndex
CREATE UNIQUE INDEX "Post_slug_key" ON "Post"("slug") \;
-- CreateIndex
CREATE INDEX "Post_published_authorId_idx" ON "Post"("published", "authorId") \;
-- AddForeignKey
ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;
UPDATE "_prisma_migrations" SET "finished_at" = '2024-03-03 00:00:01+00', "applied_steps_count" = "applied_steps_count" + 1 WHERE "id" = '0b9c7e1a-0000-4000-8000-000000000004';
-- the same migration applied again by hand (drift): fails on the first statement
ALTER TYPE "Role" ADD VALUE 'MODERATOR';
ALTER TYPE "Role" ADD VALUE IF NOT EXISTS 'MODERATOR';
CREATE UNIQUE INDEX "Post_slug_key" ON "Post"("slug") \;
CREATE INDEX "Post_published_authorId_idx" ON "Post"("published", "authorId");
SELECT pg_advisory_unlock(72707369);
SELECT "id", "checksum", "finished_at", "migration_name", "logs", "rolled_back_at", "applied_steps_count" FROM "_prisma_migrations" ORDER BY "started_at" ASC, "id";
SELECT enum_range(NULL::"Role");
SELECT "role", count(*) FROM "User" GROUP BY "role" ORDER BY 1;
DELETE FROM "User" WHERE "id" = 10;
UPDATE "User" SET "id" = 1000 WHERE "id" = 20;
SELECT count(*), count(*) FILTER (WHERE "authorId" = 1000), sum("viewCount") FROM "Post";
SELECT count(*), count(*) FILTER (WHERE "userId" = 1000) FROM "Profile";
SELECT conrelid::regclass::text, conname, contype, confupdtype, confdeltype FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2;
\d "Post"
