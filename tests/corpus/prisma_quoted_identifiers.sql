-- Prisma migrate: PascalCase models, camelCase fields, all quoted.
-- CreateTable
CREATE TABLE "Shop"."Customer" (
    "id" TEXT NOT NULL,
    "emailAddress" TEXT NOT NULL,
    CONSTRAINT "Customer_pkey" PRIMARY KEY ("id")
);

-- AlterTable
ALTER TABLE "Shop"."Order" ADD COLUMN "customerId" TEXT,
ADD COLUMN "placedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP;

-- CreateIndex
CREATE UNIQUE INDEX "Customer_emailAddress_key" ON "Shop"."Customer"("emailAddress");

-- AddForeignKey
ALTER TABLE "Shop"."Order" ADD CONSTRAINT "Order_customerId_fkey" FOREIGN KEY ("customerId") REFERENCES "Shop"."Customer"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AlterTable
ALTER TABLE "Shop"."Order" ALTER COLUMN "customerId" SET NOT NULL,
ADD COLUMN "Notes" VARCHAR(200);
