SELECT
  "t3"."customer_id" AS "customer_id"
FROM (
  SELECT DISTINCT
    "t0"."customer_id" AS "customer_id"
  FROM "events" AS "t0"
  WHERE
    "t0"."type" = 'track'
    AND "t0"."name" = 'Order Completed'
    AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
) AS "t3"
LEFT ANTI JOIN (
  SELECT
    "t0"."customer_id" AS "customer_id"
  FROM "events" AS "t0"
  WHERE
    "t0"."type" = 'track'
    AND "t0"."name" = 'Order Completed'
    AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
    AND "t0"."timestamp" > parseDateTimeBestEffort('2026-01-30T12:00:00+00:00', 'UTC')
) AS "t4"
  ON "t3"."customer_id" = "t4"."customer_id"
