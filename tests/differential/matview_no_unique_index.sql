-- REFRESH on a view without a unique index works directly.
CREATE TABLE sales (day int, amount int);
INSERT INTO sales SELECT g % 7, g FROM generate_series(1, 70) g;
CREATE MATERIALIZED VIEW daily AS SELECT day, sum(amount) AS total FROM sales GROUP BY day;
CREATE INDEX daily_day ON daily (day);
INSERT INTO sales VALUES (1, 1000);
REFRESH MATERIALIZED VIEW daily;
SELECT * FROM daily ORDER BY day;
