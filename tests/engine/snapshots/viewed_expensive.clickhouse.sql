SELECT DISTINCT
  "t1"."customer_id" AS "customer_id"
FROM (
  SELECT
    *
  FROM "events" AS "t0"
  WHERE
    "t0"."type" = 'track'
    AND "t0"."name" = 'Product Viewed'
    AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
    AND CASE
      WHEN JSONType("t0"."properties", 'price') IN ('Int64', 'UInt64', 'Double')
      THEN JSONExtractFloat("t0"."properties", 'price')
      ELSE NULL
    END >= 150
) AS "t1"
