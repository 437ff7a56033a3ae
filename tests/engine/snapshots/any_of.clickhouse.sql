SELECT
  *
FROM (
  SELECT
    "t3"."customer_id" AS "customer_id"
  FROM (
    SELECT
      *
    FROM "customers" AS "t1"
    WHERE
      CASE
        WHEN JSONType("t1"."traits", 'vip') = 'Bool'
        THEN JSONExtractBool("t1"."traits", 'vip')
        ELSE NULL
      END = TRUE
  ) AS "t3"
) AS "t4"
UNION DISTINCT
SELECT
  *
FROM (
  SELECT DISTINCT
    "t0"."customer_id" AS "customer_id"
  FROM "events" AS "t0"
  WHERE
    "t0"."type" = 'track'
    AND "t0"."name" = 'Order Completed'
    AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
    AND "t0"."timestamp" > parseDateTimeBestEffort('2026-02-15T12:00:00+00:00', 'UTC')
) AS "t2"
