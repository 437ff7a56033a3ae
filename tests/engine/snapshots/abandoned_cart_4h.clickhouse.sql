SELECT DISTINCT
  *
FROM (
  SELECT
    "t3"."customer_id" AS "customer_id"
  FROM (
    SELECT
      *
    FROM "events" AS "t0"
    WHERE
      "t0"."type" = 'track'
      AND "t0"."name" = 'Product Added'
      AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
      AND "t0"."timestamp" > parseDateTimeBestEffort('2026-02-26T12:00:00+00:00', 'UTC')
      AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T08:00:00+00:00', 'UTC')
  ) AS "t3"
  LEFT ANTI JOIN (
    SELECT
      *
    FROM "events" AS "t1"
    WHERE
      "t1"."type" = 'track'
      AND "t1"."name" = 'Order Completed'
      AND "t1"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
      AND "t1"."timestamp" > parseDateTimeBestEffort('2026-02-26T12:00:00+00:00', 'UTC')
  ) AS "t5"
    ON "t3"."customer_id" = "t5"."customer_id"
    AND "t5"."timestamp" > "t3"."timestamp"
    AND "t5"."timestamp" <= (
      "t3"."timestamp" + INTERVAL '14400' SECOND
    )
) AS "t6"
